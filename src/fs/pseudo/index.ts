/**
 * The pseudo-volume technique as the rest of the code sees it: classification of a volume the
 * kernel can mount and we cannot read (XFS, btrfs), and the mount options both the backup's walk
 * and `imgmount --kernel` use.
 */
export { classifyPseudo, type PseudoReport } from './classify-pseudo.js';
export { isKernelFs, kernelFsOptions, probeKernelFs, probeKernelFsAt, PROBE_BYTES, type KernelFsType } from './kernel-fs.js';
