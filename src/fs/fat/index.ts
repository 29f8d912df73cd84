/**
 * The FAT12/16/32 driver as the rest of the code sees it: classification of a volume's blocks for
 * a backup, the read-only tree for mounts and restores, and the boot-sector probe the detector
 * uses. Everything else in this folder is the driver's own business.
 */
export { classifyFat, type ClassifyFatOptions, type FatClassification } from './classify.js';
export { openFat, FatTree, FAT_ROOT_INO, type OpenFatOptions } from './tree.js';
export { probeFat, fatBlockSize, type FatGeometry, type FatType } from './boot-sector.js';
