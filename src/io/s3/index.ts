export { isRemote, parseLocation, locationText, locationDir, resolveS3Config, parseIni, type ObjectLocation, type S3Config, type Credentials } from './config.js';
export { S3Client, type ClientOptions, type ClientStats, type ObjectInfo, type GetResult, type ByteRange, type ListedObject } from './client.js';
export { signRequest, UNSIGNED_PAYLOAD } from './sigv4.js';
export { MultipartSink, partSizeFor, type MultipartOptions } from './multipart-sink.js';
