// SPDX-License-Identifier: GPL-2.0
/*
 * cosim_accel: Linux driver for the cosim GEMM accelerator (PCI 1ded:acc1).
 *
 * Register map: docs/register-map.md, as macros in cosim_accel_regs.h (generated from the crate
 * gemm-abi). ioctl ABI: cosim_accel_ioctl.h (checked against gemm-abi by its tests).
 *
 * Who owns what: the driver owns the device while a job runs (one job at a time per device,
 * serialized by accel->lock); DMA buffers are allocated per job with dma_alloc_coherent. A job
 * that times out may still be running on the device, so its buffers are parked on accel->stale
 * and freed only once the device reads idle (or on reset/remove), never while it may write them.
 * The completion interrupt (MSI-X vector 0) only counts and wakes the waiter; all register
 * accesses happen in process context.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/bitfield.h>
#include <linux/cdev.h>
#include <linux/delay.h>
#include <linux/device.h>
#include <linux/dma-mapping.h>
#include <linux/fs.h>
#include <linux/idr.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/kref.h>
#include <linux/ktime.h>
#include <linux/list.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/wait.h>

#include "cosim_accel_ioctl.h"
#include "cosim_accel_regs.h" /* register map, generated from gemm-abi */

#define DRV_NAME "cosim_accel"
#define ACCEL_MAX_DEVICES 16

#define ALL_ONES 0xffffffffu

/* How often a waiting job re-checks that the device still answers. */
#define LIVENESS_SLICE_MS 500

static unsigned int timeout_ms = 120000;
module_param(timeout_ms, uint, 0644);
MODULE_PARM_DESC(timeout_ms, "default GEMM job timeout in milliseconds (per-job override in the ioctl)");

struct accel_buf {
	struct list_head node;
	size_t size;
	void *cpu;
	dma_addr_t dma;
};

struct accel_dev {
	struct kref ref;
	struct pci_dev *pdev;
	void __iomem *regs;
	int index;
	struct cdev cdev;
	struct device *dev; /* the class device /dev/accelN */
	int irq;
	int nvec;

	struct mutex lock;     /* serializes jobs, reset and the stale list */
	bool gone;             /* set by remove(); file ops fail with ENODEV afterwards */
	struct list_head stale; /* buffers of a timed-out job, freed once the device is idle */

	wait_queue_head_t wq;
	atomic_t irq_seen;

	u32 id, version, array, max_dim;

	/* counters (sysfs and COSIM_ACCEL_IOC_INFO) */
	atomic64_t jobs, errors, timeouts, irqs;
	u64 last_cycles, last_dma_wait_cycles, last_device_ns;
	u32 last_error;
};

static struct class *accel_class;
static dev_t accel_devt;
static DEFINE_IDA(accel_ida);

static inline u32 rd(struct accel_dev *a, u32 off)
{
	return ioread32(a->regs + off);
}

static inline void wr(struct accel_dev *a, u32 off, u32 val)
{
	iowrite32(val, a->regs + off);
}

static u64 rd64(struct accel_dev *a, u32 lo)
{
	u32 l = rd(a, lo), h = rd(a, lo + 4);

	return ((u64)h << 32) | l;
}

static void accel_release(struct kref *ref)
{
	struct accel_dev *a = container_of(ref, struct accel_dev, ref);

	kfree(a);
}

/* ---------------------------------------------------------------- DMA buffers */

static struct accel_buf *buf_alloc(struct accel_dev *a, size_t size)
{
	struct accel_buf *b = kzalloc(sizeof(*b), GFP_KERNEL);

	if (!b)
		return NULL;
	b->size = size;
	b->cpu = dma_alloc_coherent(&a->pdev->dev, size, &b->dma, GFP_KERNEL);
	if (!b->cpu) {
		kfree(b);
		return NULL;
	}
	INIT_LIST_HEAD(&b->node);
	return b;
}

static void buf_free(struct accel_dev *a, struct accel_buf *b)
{
	if (!b)
		return;
	dma_free_coherent(&a->pdev->dev, b->size, b->cpu, b->dma);
	kfree(b);
}

static void free_stale(struct accel_dev *a)
{
	struct accel_buf *b, *tmp;

	list_for_each_entry_safe(b, tmp, &a->stale, node) {
		list_del(&b->node);
		buf_free(a, b);
	}
}

/* Frees buffers of timed-out jobs if the device now reads idle. Called with a->lock held. */
static void reap_stale(struct accel_dev *a)
{
	u32 st;

	if (list_empty(&a->stale))
		return;
	st = rd(a, GEMM_REG_STATUS);
	if (st != ALL_ONES && !(st & GEMM_STATUS_BUSY)) {
		free_stale(a);
		dev_info(&a->pdev->dev, "device idle again; freed buffers of the timed-out job\n");
	}
}

/* ---------------------------------------------------------------- interrupt */

static irqreturn_t accel_irq(int irq, void *data)
{
	struct accel_dev *a = data;

	atomic64_inc(&a->irqs);
	atomic_set(&a->irq_seen, 1);
	wake_up(&a->wq);
	return IRQ_HANDLED;
}

/* ---------------------------------------------------------------- GEMM job */

static int errno_for_device_error(u32 code)
{
	switch (code) {
	case COSIM_ACCEL_ERR_ZERO_DIM:
	case COSIM_ACCEL_ERR_DIM_TOO_LARGE:
	case COSIM_ACCEL_ERR_BAD_STRIDE:
	case COSIM_ACCEL_ERR_MISALIGNED:
		return -EINVAL;
	case COSIM_ACCEL_ERR_BUSY:
		return -EBUSY;
	default:
		return -EIO;
	}
}

static const char *device_error_name(u32 code)
{
	static const char *const names[] = {
		"OK", "ZERO_DIM", "DIM_TOO_LARGE", "BAD_STRIDE", "MISALIGNED", "BUSY", "DMA_ERROR",
	};

	return code < ARRAY_SIZE(names) ? names[code] : "UNKNOWN";
}

static void set_addr(struct accel_dev *a, u32 lo_reg, dma_addr_t addr)
{
	wr(a, lo_reg, lower_32_bits(addr));
	wr(a, lo_reg + 4, upper_32_bits(addr));
}

/*
 * Waits for the completion interrupt. Returns 0, -ETIMEDOUT, -EINTR, -ENODEV (device removed), or
 * -EIO if the device stopped answering (all-ones reads: the simulation behind QEMU is gone).
 * Every LIVENESS_SLICE_MS without an interrupt it reads STATUS: all ones ends the wait with -EIO,
 * and a finished job whose interrupt never arrived ends it with 0 (and a warning). An interrupt
 * while STATUS still reads BUSY (a late one from an earlier, timed-out job) is ignored.
 */
static int wait_for_irq(struct accel_dev *a, unsigned int tmo_ms)
{
	unsigned long deadline = jiffies + msecs_to_jiffies(tmo_ms);

	for (;;) {
		long left = (long)(deadline - jiffies);
		long slice = min_t(long, max(left, 0L), msecs_to_jiffies(LIVENESS_SLICE_MS));
		long r;
		u32 st;

		r = wait_event_interruptible_timeout(a->wq,
						     atomic_read(&a->irq_seen) || READ_ONCE(a->gone),
						     slice);
		if (READ_ONCE(a->gone))
			return -ENODEV;
		if (r < 0)
			return -EINTR;
		st = rd(a, GEMM_REG_STATUS);
		if (st == ALL_ONES && rd(a, GEMM_REG_ID) == ALL_ONES)
			return -EIO;
		if (atomic_read(&a->irq_seen)) {
			if (!(st & GEMM_STATUS_BUSY))
				return 0;
			atomic_set(&a->irq_seen, 0);
			dev_dbg(&a->pdev->dev, "interrupt while BUSY (late one of an earlier job); waiting on\n");
			continue;
		}
		if (st != ALL_ONES && !(st & GEMM_STATUS_BUSY) && (st & (GEMM_STATUS_DONE | GEMM_STATUS_ERROR))) {
			dev_warn(&a->pdev->dev, "job finished without its interrupt (STATUS=0x%08x)\n", st);
			return 0;
		}
		if (time_after_eq(jiffies, deadline))
			return -ETIMEDOUT;
	}
}

static long accel_gemm(struct accel_dev *a, struct cosim_accel_gemm __user *uarg)
{
	struct cosim_accel_gemm g;
	struct accel_buf *ba = NULL, *bb = NULL, *bc = NULL;
	size_t sa, sb, sc;
	unsigned int tmo;
	ktime_t t0;
	u32 st, err;
	long ret;

	if (copy_from_user(&g, uarg, sizeof(g)))
		return -EFAULT;
	g.cycles = 0;
	g.dma_wait_cycles = 0;
	g.device_ns = 0;
	g.dev_error = 0;
	g.pad0 = 0;

	if (g.m == 0 || g.n == 0 || g.k == 0 || g.m > a->max_dim || g.n > a->max_dim ||
	    g.k > a->max_dim) {
		dev_warn(&a->pdev->dev, "gemm: bad size m=%u n=%u k=%u (each must be 1..%u)\n",
			 g.m, g.n, g.k, a->max_dim);
		return -EINVAL;
	}
	sa = (size_t)g.m * g.k;
	sb = (size_t)g.k * g.n;
	sc = (size_t)g.m * g.n * sizeof(u32);
	tmo = g.timeout_ms ? g.timeout_ms : READ_ONCE(timeout_ms);

	if (mutex_lock_interruptible(&a->lock))
		return -EINTR;
	if (a->gone) {
		ret = -ENODEV;
		goto out_unlock;
	}
	reap_stale(a);

	st = rd(a, GEMM_REG_STATUS);
	if (st == ALL_ONES) {
		dev_err(&a->pdev->dev, "gemm: device not responding (STATUS reads all ones)\n");
		atomic64_inc(&a->timeouts);
		ret = -EIO;
		goto out_unlock;
	}
	if (st & GEMM_STATUS_BUSY) {
		dev_warn(&a->pdev->dev, "gemm: device still busy with an earlier (timed-out) job\n");
		ret = -EBUSY;
		goto out_unlock;
	}

	ba = buf_alloc(a, sa);
	bb = buf_alloc(a, sb);
	bc = buf_alloc(a, sc);
	if (!ba || !bb || !bc) {
		dev_warn(&a->pdev->dev, "gemm: cannot allocate DMA buffers (%zu + %zu + %zu bytes)\n",
			 sa, sb, sc);
		ret = -ENOMEM;
		goto out_free;
	}
	if (copy_from_user(ba->cpu, u64_to_user_ptr(g.a_ptr), sa) ||
	    copy_from_user(bb->cpu, u64_to_user_ptr(g.b_ptr), sb)) {
		ret = -EFAULT;
		goto out_free;
	}

	wr(a, GEMM_REG_CTRL, GEMM_CTRL_CLEAR);
	wr(a, GEMM_REG_MSIX_VECTOR, 0);
	wr(a, GEMM_REG_M, g.m);
	wr(a, GEMM_REG_N, g.n);
	wr(a, GEMM_REG_K, g.k);
	wr(a, GEMM_REG_LDA, 0);
	wr(a, GEMM_REG_LDB, 0);
	wr(a, GEMM_REG_LDC, 0);
	set_addr(a, GEMM_REG_A_ADDR_LO, ba->dma);
	set_addr(a, GEMM_REG_B_ADDR_LO, bb->dma);
	set_addr(a, GEMM_REG_C_ADDR_LO, bc->dma);

	atomic_set(&a->irq_seen, 0);
	t0 = ktime_get();
	wr(a, GEMM_REG_CTRL, GEMM_CTRL_START | GEMM_CTRL_IRQ_EN);
	ret = wait_for_irq(a, tmo);
	g.device_ns = ktime_to_ns(ktime_sub(ktime_get(), t0));

	if (ret) {
		atomic64_inc(&a->timeouts);
		if (ret == -ETIMEDOUT)
			dev_err(&a->pdev->dev,
				"gemm: m=%u n=%u k=%u timed out after %u ms (STATUS=0x%08x)\n",
				g.m, g.n, g.k, tmo, rd(a, GEMM_REG_STATUS));
		else if (ret == -EIO)
			dev_err(&a->pdev->dev,
				"gemm: m=%u n=%u k=%u: device stopped answering (all-ones reads)\n",
				g.m, g.n, g.k);
		else if (ret == -ENODEV)
			dev_err(&a->pdev->dev, "gemm: device removed while a job was running\n");
		else
			dev_warn(&a->pdev->dev, "gemm: m=%u n=%u k=%u: interrupted by a signal\n",
				 g.m, g.n, g.k);
		/* The device may still DMA into these buffers: park them until it reads idle. */
		list_add_tail(&ba->node, &a->stale);
		list_add_tail(&bb->node, &a->stale);
		list_add_tail(&bc->node, &a->stale);
		ba = bb = bc = NULL;
		goto out_copy_result;
	}

	st = rd(a, GEMM_REG_STATUS);
	err = rd(a, GEMM_REG_ERROR);
	g.cycles = rd64(a, GEMM_REG_CYCLES_LO);
	g.dma_wait_cycles = rd64(a, GEMM_REG_DMA_WAIT_LO);
	a->last_cycles = g.cycles;
	a->last_dma_wait_cycles = g.dma_wait_cycles;
	a->last_device_ns = g.device_ns;
	if (st == ALL_ONES) {
		atomic64_inc(&a->timeouts);
		dev_err(&a->pdev->dev, "gemm: device stopped answering after the interrupt\n");
		ret = -EIO;
		goto out_copy_result;
	}
	if ((st & GEMM_STATUS_ERROR) || err) {
		g.dev_error = err;
		a->last_error = err;
		atomic64_inc(&a->errors);
		ret = errno_for_device_error(err);
		dev_warn(&a->pdev->dev, "gemm: m=%u n=%u k=%u: device error %u (%s) -> errno %ld\n",
			 g.m, g.n, g.k, err, device_error_name(err), -ret);
		goto out_copy_result;
	}
	if (!(st & GEMM_STATUS_DONE))
		dev_warn(&a->pdev->dev, "gemm: interrupt without DONE (STATUS=0x%08x)\n", st);
	a->last_error = 0;

	if (copy_to_user(u64_to_user_ptr(g.c_ptr), bc->cpu, sc)) {
		ret = -EFAULT;
		goto out_free;
	}
	atomic64_inc(&a->jobs);
	ret = 0;

out_copy_result:
	if (copy_to_user(uarg, &g, sizeof(g)) && !ret)
		ret = -EFAULT;
out_free:
	buf_free(a, ba);
	buf_free(a, bb);
	buf_free(a, bc);
out_unlock:
	mutex_unlock(&a->lock);
	return ret;
}

static long accel_reset(struct accel_dev *a)
{
	int r;
	long ret = 0;
	u32 id;

	if (mutex_lock_interruptible(&a->lock))
		return -EINTR;
	if (a->gone) {
		mutex_unlock(&a->lock);
		return -ENODEV;
	}
	wr(a, GEMM_REG_CTRL, GEMM_CTRL_CLEAR);
	r = pci_reset_function(a->pdev);
	if (r)
		dev_info(&a->pdev->dev, "reset: no PCI function reset available (%d); cleared status only\n", r);
	reap_stale(a);
	id = rd(a, GEMM_REG_ID);
	if (id != GEMM_ID_VALUE) {
		dev_err(&a->pdev->dev, "reset: ID reads 0x%08x, expected 0x%08x\n", id, GEMM_ID_VALUE);
		ret = -EIO;
	}
	mutex_unlock(&a->lock);
	return ret;
}

static long accel_info(struct accel_dev *a, struct cosim_accel_info __user *uarg)
{
	struct cosim_accel_info info;

	memset(&info, 0, sizeof(info));
	info.abi_version = COSIM_ACCEL_ABI_VERSION;
	info.index = a->index;
	info.vendor = a->pdev->vendor;
	info.device = a->pdev->device;
	info.revision = a->pdev->revision;
	info.id = a->id;
	info.version = a->version;
	info.array_rows = FIELD_GET(GEMM_ARRAY_ROWS, a->array);
	info.array_cols = FIELD_GET(GEMM_ARRAY_COLS, a->array);
	info.max_dim = a->max_dim;
	info.msix_vectors = a->nvec;
	info.timeout_ms = READ_ONCE(timeout_ms);
	info.jobs = atomic64_read(&a->jobs);
	info.errors = atomic64_read(&a->errors);
	info.timeouts = atomic64_read(&a->timeouts);
	info.irqs = atomic64_read(&a->irqs);
	if (mutex_lock_interruptible(&a->lock))
		return -EINTR;
	if (!a->gone) {
		info.jobs_done_reg = rd(a, GEMM_REG_JOBS_DONE);
		info.nic_rx_frames = rd(a, GEMM_REG_NIC_RX_FRAMES);
		info.nic_tx_frames = rd(a, GEMM_REG_NIC_TX_FRAMES);
		info.uart_rx_bytes = rd(a, GEMM_REG_UART_RX_BYTES);
	}
	mutex_unlock(&a->lock);
	strscpy(info.pci_name, pci_name(a->pdev), sizeof(info.pci_name));
	return copy_to_user(uarg, &info, sizeof(info)) ? -EFAULT : 0;
}

/* ---------------------------------------------------------------- file operations */

static int accel_open(struct inode *inode, struct file *f)
{
	struct accel_dev *a = container_of(inode->i_cdev, struct accel_dev, cdev);

	kref_get(&a->ref);
	f->private_data = a;
	return 0;
}

static int accel_file_release(struct inode *inode, struct file *f)
{
	struct accel_dev *a = f->private_data;

	kref_put(&a->ref, accel_release);
	return 0;
}

static long accel_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	struct accel_dev *a = f->private_data;
	void __user *uarg = (void __user *)arg;

	if (READ_ONCE(a->gone))
		return -ENODEV;
	switch (cmd) {
	case COSIM_ACCEL_IOC_INFO:
		return accel_info(a, uarg);
	case COSIM_ACCEL_IOC_GEMM:
		return accel_gemm(a, uarg);
	case COSIM_ACCEL_IOC_RESET:
		return accel_reset(a);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations accel_fops = {
	.owner = THIS_MODULE,
	.open = accel_open,
	.release = accel_file_release,
	.unlocked_ioctl = accel_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

/* ---------------------------------------------------------------- sysfs counters */

#define COUNTER_ATTR(name, expr)                                                           \
	static ssize_t name##_show(struct device *d, struct device_attribute *attr, char *buf) \
	{                                                                                  \
		struct accel_dev *a = dev_get_drvdata(d);                                  \
		return sysfs_emit(buf, "%llu\n", (unsigned long long)(expr));              \
	}                                                                                  \
	static DEVICE_ATTR_RO(name)

COUNTER_ATTR(jobs, atomic64_read(&a->jobs));
COUNTER_ATTR(errors, atomic64_read(&a->errors));
COUNTER_ATTR(timeouts, atomic64_read(&a->timeouts));
COUNTER_ATTR(irqs, atomic64_read(&a->irqs));
COUNTER_ATTR(last_cycles, READ_ONCE(a->last_cycles));
COUNTER_ATTR(last_dma_wait_cycles, READ_ONCE(a->last_dma_wait_cycles));
COUNTER_ATTR(last_device_ns, READ_ONCE(a->last_device_ns));
COUNTER_ATTR(last_error, READ_ONCE(a->last_error));
COUNTER_ATTR(max_dim, a->max_dim);

/* Device registers read on demand (all ones if the simulation is gone). */
#define REG_ATTR(name, reg)                                                                \
	static ssize_t name##_show(struct device *d, struct device_attribute *attr, char *buf) \
	{                                                                                  \
		struct accel_dev *a = dev_get_drvdata(d);                                  \
		u32 v;                                                                     \
		if (mutex_lock_interruptible(&a->lock))                                    \
			return -EINTR;                                                     \
		v = a->gone ? 0 : rd(a, reg);                                              \
		mutex_unlock(&a->lock);                                                    \
		return sysfs_emit(buf, "%u\n", v);                                         \
	}                                                                                  \
	static DEVICE_ATTR_RO(name)

REG_ATTR(jobs_done_reg, GEMM_REG_JOBS_DONE);
REG_ATTR(nic_rx_frames, GEMM_REG_NIC_RX_FRAMES);
REG_ATTR(nic_tx_frames, GEMM_REG_NIC_TX_FRAMES);
REG_ATTR(uart_rx_bytes, GEMM_REG_UART_RX_BYTES);

static ssize_t array_show(struct device *d, struct device_attribute *attr, char *buf)
{
	struct accel_dev *a = dev_get_drvdata(d);

	return sysfs_emit(buf, "%ux%u\n", FIELD_GET(GEMM_ARRAY_ROWS, a->array),
			  FIELD_GET(GEMM_ARRAY_COLS, a->array));
}
static DEVICE_ATTR_RO(array);

static ssize_t pci_slot_show(struct device *d, struct device_attribute *attr, char *buf)
{
	struct accel_dev *a = dev_get_drvdata(d);

	return sysfs_emit(buf, "%s\n", pci_name(a->pdev));
}
static DEVICE_ATTR_RO(pci_slot);

static struct attribute *accel_attrs[] = {
	&dev_attr_jobs.attr,
	&dev_attr_errors.attr,
	&dev_attr_timeouts.attr,
	&dev_attr_irqs.attr,
	&dev_attr_last_cycles.attr,
	&dev_attr_last_dma_wait_cycles.attr,
	&dev_attr_last_device_ns.attr,
	&dev_attr_last_error.attr,
	&dev_attr_max_dim.attr,
	&dev_attr_array.attr,
	&dev_attr_pci_slot.attr,
	&dev_attr_jobs_done_reg.attr,
	&dev_attr_nic_rx_frames.attr,
	&dev_attr_nic_tx_frames.attr,
	&dev_attr_uart_rx_bytes.attr,
	NULL,
};
ATTRIBUTE_GROUPS(accel);

/* ---------------------------------------------------------------- PCI probe/remove */

static int accel_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct accel_dev *a;
	int ret;

	a = kzalloc(sizeof(*a), GFP_KERNEL);
	if (!a)
		return -ENOMEM;
	kref_init(&a->ref);
	a->pdev = pdev;
	mutex_init(&a->lock);
	INIT_LIST_HEAD(&a->stale);
	init_waitqueue_head(&a->wq);
	pci_set_drvdata(pdev, a);

	ret = pcim_enable_device(pdev);
	if (ret) {
		dev_err(&pdev->dev, "cannot enable PCI device (%d)\n", ret);
		goto err_put;
	}
	ret = pcim_iomap_regions(pdev, BIT(0), DRV_NAME);
	if (ret) {
		dev_err(&pdev->dev, "cannot map BAR0 (%d)\n", ret);
		goto err_put;
	}
	a->regs = pcim_iomap_table(pdev)[0];
	if (pci_resource_len(pdev, 0) < 0x100) {
		dev_err(&pdev->dev, "BAR0 too small (%llu bytes)\n",
			(unsigned long long)pci_resource_len(pdev, 0));
		ret = -ENODEV;
		goto err_put;
	}
	pci_set_master(pdev);
	ret = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(64));
	if (ret)
		ret = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(32));
	if (ret) {
		dev_err(&pdev->dev, "no usable DMA mask (%d)\n", ret);
		goto err_put;
	}

	a->id = rd(a, GEMM_REG_ID);
	if (a->id != GEMM_ID_VALUE) {
		dev_err(&pdev->dev, "ID register reads 0x%08x, expected 0x%08x (GEMM); is the simulation running?\n",
			a->id, GEMM_ID_VALUE);
		ret = -ENODEV;
		goto err_put;
	}
	a->version = rd(a, GEMM_REG_VERSION);
	a->array = rd(a, GEMM_REG_ARRAY);
	a->max_dim = rd(a, GEMM_REG_MAX_DIM);
	if (a->max_dim == 0 || a->max_dim == ALL_ONES) {
		dev_err(&pdev->dev, "implausible MAX_DIM 0x%08x\n", a->max_dim);
		ret = -ENODEV;
		goto err_put;
	}
	if (FIELD_GET(GEMM_VERSION_MAJOR, a->version) !=
	    FIELD_GET(GEMM_VERSION_MAJOR, GEMM_VERSION_VALUE))
		dev_warn(&pdev->dev, "register map version %u.%u; this driver follows %u.x\n",
			 FIELD_GET(GEMM_VERSION_MAJOR, a->version), FIELD_GET(GEMM_VERSION_MINOR, a->version),
			 FIELD_GET(GEMM_VERSION_MAJOR, GEMM_VERSION_VALUE));

	ret = pci_alloc_irq_vectors(pdev, 1, GEMM_MSIX_VECTORS, PCI_IRQ_MSIX);
	if (ret < 0) {
		dev_err(&pdev->dev, "cannot allocate MSI-X vectors (%d)\n", ret);
		goto err_put;
	}
	a->nvec = ret;
	a->irq = pci_irq_vector(pdev, 0);
	ret = request_irq(a->irq, accel_irq, 0, DRV_NAME, a);
	if (ret) {
		dev_err(&pdev->dev, "cannot request IRQ %d (%d)\n", a->irq, ret);
		goto err_vectors;
	}

	a->index = ida_alloc_max(&accel_ida, ACCEL_MAX_DEVICES - 1, GFP_KERNEL);
	if (a->index < 0) {
		ret = a->index;
		dev_err(&pdev->dev, "too many accelerators (max %d)\n", ACCEL_MAX_DEVICES);
		goto err_irq;
	}
	cdev_init(&a->cdev, &accel_fops);
	a->cdev.owner = THIS_MODULE;
	ret = cdev_add(&a->cdev, MKDEV(MAJOR(accel_devt), a->index), 1);
	if (ret) {
		dev_err(&pdev->dev, "cdev_add failed (%d)\n", ret);
		goto err_ida;
	}
	a->dev = device_create_with_groups(accel_class, &pdev->dev,
					   MKDEV(MAJOR(accel_devt), a->index), a, accel_groups,
					   "accel%d", a->index);
	if (IS_ERR(a->dev)) {
		ret = PTR_ERR(a->dev);
		dev_err(&pdev->dev, "device_create failed (%d)\n", ret);
		goto err_cdev;
	}

	wr(a, GEMM_REG_CTRL, GEMM_CTRL_CLEAR);
	dev_info(&pdev->dev,
		 "accel%d: GEMM v%u.%u, %ux%u MAC array, max dim %u, %d MSI-X vectors\n",
		 a->index, FIELD_GET(GEMM_VERSION_MAJOR, a->version),
		 FIELD_GET(GEMM_VERSION_MINOR, a->version), FIELD_GET(GEMM_ARRAY_ROWS, a->array),
		 FIELD_GET(GEMM_ARRAY_COLS, a->array), a->max_dim, a->nvec);
	return 0;

err_cdev:
	cdev_del(&a->cdev);
err_ida:
	ida_free(&accel_ida, a->index);
err_irq:
	free_irq(a->irq, a);
err_vectors:
	pci_free_irq_vectors(pdev);
err_put:
	pci_set_drvdata(pdev, NULL);
	kref_put(&a->ref, accel_release);
	return ret;
}

static void accel_remove(struct pci_dev *pdev)
{
	struct accel_dev *a = pci_get_drvdata(pdev);

	/* Wake a waiting job first (it holds the lock), then wait for it to leave. */
	WRITE_ONCE(a->gone, true);
	wake_up(&a->wq);
	mutex_lock(&a->lock);
	mutex_unlock(&a->lock);

	device_destroy(accel_class, MKDEV(MAJOR(accel_devt), a->index));
	cdev_del(&a->cdev);
	free_irq(a->irq, a);
	pci_free_irq_vectors(pdev);
	pci_clear_master(pdev);
	mutex_lock(&a->lock);
	free_stale(a);
	mutex_unlock(&a->lock);
	ida_free(&accel_ida, a->index);
	pci_set_drvdata(pdev, NULL);
	kref_put(&a->ref, accel_release);
}

static const struct pci_device_id accel_ids[] = {
	{ PCI_DEVICE(GEMM_PCI_VENDOR_ID, GEMM_PCI_DEVICE_ID) },
	{ 0 }
};
MODULE_DEVICE_TABLE(pci, accel_ids);

static struct pci_driver accel_driver = {
	.name = DRV_NAME,
	.id_table = accel_ids,
	.probe = accel_probe,
	.remove = accel_remove,
};

static int __init accel_init(void)
{
	int ret;

	ret = alloc_chrdev_region(&accel_devt, 0, ACCEL_MAX_DEVICES, "accel");
	if (ret)
		return ret;
	accel_class = class_create(THIS_MODULE, "cosim_accel");
	if (IS_ERR(accel_class)) {
		ret = PTR_ERR(accel_class);
		goto err_region;
	}
	ret = pci_register_driver(&accel_driver);
	if (ret)
		goto err_class;
	return 0;

err_class:
	class_destroy(accel_class);
err_region:
	unregister_chrdev_region(accel_devt, ACCEL_MAX_DEVICES);
	return ret;
}

static void __exit accel_exit(void)
{
	pci_unregister_driver(&accel_driver);
	class_destroy(accel_class);
	unregister_chrdev_region(accel_devt, ACCEL_MAX_DEVICES);
}

module_init(accel_init);
module_exit(accel_exit);

MODULE_DESCRIPTION("cosim GEMM accelerator (PCI 1ded:acc1)");
MODULE_LICENSE("GPL");
