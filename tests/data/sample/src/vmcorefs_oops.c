// A module that oopses on request (tools/make-sample-vmcore --kexec oops):
// echo 1 > /sys/kernel/debug/vmcorefs_oops
#include <linux/module.h>
#include <linux/debugfs.h>
#include <linux/fs.h>

struct victim { long pad[3]; long value; };
static struct dentry *entry;

static noinline long vmcorefs_oops_touch(struct victim *v)
{
	return READ_ONCE(v->value) + 1;	/* v is NULL: a page fault at address 0x18 */
}

static noinline long vmcorefs_oops_walk(int depth, struct victim *v)
{
	if (depth > 0)
		return vmcorefs_oops_walk(depth - 1, v) + 1;
	return vmcorefs_oops_touch(v);
}

static ssize_t vmcorefs_oops_write(struct file *f, const char __user *buf, size_t n, loff_t *pos)
{
	pr_info("vmcorefs_oops: dereferencing NULL on purpose\n");
	return vmcorefs_oops_walk(2, NULL) ? n : n;
}

static const struct file_operations fops = { .owner = THIS_MODULE, .write = vmcorefs_oops_write };

static int __init vmcorefs_oops_init(void)
{
	entry = debugfs_create_file("vmcorefs_oops", 0200, NULL, NULL, &fops);
	return 0;
}

static void __exit vmcorefs_oops_exit(void)
{
	debugfs_remove(entry);
}

module_init(vmcorefs_oops_init);
module_exit(vmcorefs_oops_exit);
MODULE_LICENSE("GPL");
