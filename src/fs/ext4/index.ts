/**
 * The ext2/3/4 driver as the rest of the code sees it: classification of a volume's blocks for a
 * backup, and the read-only tree (with journal replay) for mounts and restores. Everything else in
 * this folder is the driver's own business.
 */
export { classifyExt4, type ClassifyExt4Options, type Ext4Classification, type FileRecord } from './classify.js';
export { classifyExt4Recovering } from './classify-recovering.js';
export { openExt4, type Ext4Tree, type OpenExt4Options } from './reader.js';
