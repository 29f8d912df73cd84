export * from './superblock.js';
export * from './group-desc.js';
export * from './inode.js';
export * from './extent.js';
export * from './dirent.js';
export * from './xattr.js';
export * from './table.js';
