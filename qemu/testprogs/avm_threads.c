/*
 * avm_threads: a process with a second thread whose credentials and network
 * namespace are its own, for the Mon-VM tests of the per-thread checks
 * (qemu/tests/rootkit.rs). The task list holds only a thread group's
 * leader; a rootkit that gives a thread root, or hides the namespace a
 * thread is in, is seen only by a walk of each group's threads.
 *
 * The thread commits a cred of its own (prctl PR_SET_KEEPCAPS, which
 * every thread may do: threads start out sharing their creator's) and,
 * run as root, moves into a new network namespace (unshare CLONE_NEWNET;
 * as a user it fails and the thread stays where it is). Then both threads
 * wait for a signal. No libc (built with -nostdlib -static on the host by
 * the test): raw system calls only.
 */

#define SYS_PAUSE 34
#define SYS_CLONE 56
#define SYS_PRCTL 157
#define SYS_UNSHARE 272

#define CLONE_VM 0x00000100
#define CLONE_FS 0x00000200
#define CLONE_FILES 0x00000400
#define CLONE_SIGHAND 0x00000800
#define CLONE_THREAD 0x00010000
#define CLONE_SYSVSEM 0x00040000
#define CLONE_NEWNET 0x40000000
#define PR_SET_KEEPCAPS 8

static long syscall2(long number, long a, long b)
{
	long ret;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(number), "D"(a), "S"(b)
			 : "rcx", "r11", "memory");
	return ret;
}

static void wait_forever(void)
{
	/* pause returns only when a handled signal arrives: none is handled,
	 * so the default actions end the process. */
	for (;;)
		syscall2(SYS_PAUSE, 0, 0);
}

static void thread_main(void)
{
	syscall2(SYS_PRCTL, PR_SET_KEEPCAPS, 0);
	syscall2(SYS_UNSHARE, CLONE_NEWNET, 0);
	wait_forever();
}

static char thread_stack[64 * 1024] __attribute__((aligned(16)));

void _start(void)
{
	long ret;
	long flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND |
		     CLONE_THREAD | CLONE_SYSVSEM;
	register long child_tid __asm__("r10") = 0;
	register long tls __asm__("r8") = 0;

	/* The new thread starts on its own stack with every register but
	 * rax, rcx and r11 as the caller had them: it calls thread_main
	 * (which never returns) through a register the kernel kept. */
	__asm__ volatile("syscall\n\t"
			 "test %%rax, %%rax\n\t"
			 "jnz 1f\n\t"
			 "call *%[entry]\n\t"
			 "ud2\n"
			 "1:"
			 : "=a"(ret)
			 : "a"(SYS_CLONE), "D"(flags),
			   "S"(thread_stack + sizeof(thread_stack)), "d"(0),
			   "r"(child_tid), "r"(tls), [entry] "b"(thread_main)
			 : "rcx", "r11", "memory");
	(void)ret;
	wait_forever();
}
