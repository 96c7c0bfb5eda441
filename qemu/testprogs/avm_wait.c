/*
 * avm_wait: a program that waits for a signal, for the Mon-VM tests of the
 * credentials check (qemu/tests/monvm_setuid.rs). Installed set-uid root it
 * stands for `sudo` or `passwd`: a process that runs as root under a user's
 * shell for as long as it lives. No libc (built with -nostdlib -static on
 * the host by the test): only the `pause` system call.
 */

static long syscall1(long number, long arg)
{
	long ret;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(number), "D"(arg)
			 : "rcx", "r11", "memory");
	return ret;
}

#define SYS_PAUSE 34

void _start(void)
{
	/* pause returns only when a handled signal arrives: none is handled,
	 * so the default actions end the process. */
	for (;;)
		syscall1(SYS_PAUSE, 0);
}
