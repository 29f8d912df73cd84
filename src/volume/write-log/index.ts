/**
 * The write log's public surface (issue 13, live volumes): a writable layer over a read-only
 * volume whose writes are appended to a log of segment files, with points in time (sync records),
 * point-time views that stay readable while writes go on, revert, dirty bits since the last
 * committed point, and recycling of segments that hold only superseded or committed data.
 * Only re-exports; the implementation lives in write-log.ts and its helpers.
 */
export { WriteLog } from './write-log.js';
export type { PointInfo, PointView, WriteLogOptions, WriteLogStats } from './write-log.js';
