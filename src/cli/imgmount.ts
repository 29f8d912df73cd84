/**
 * imgmount's entry. A plain background mount (`imgmount [-v] [--volume|--kernel] [-o ...] IMG
 * MNT`) only spawns the daemon and relays its one-line report, so this loads nothing but Node
 * built-ins for it (src/fuse/daemonize.ts); everything else (-f, -u, --help, the daemon itself)
 * is the full CLI in imgmount-main.ts.
 */
import { quickBackgroundMount } from '../fuse/daemonize.js';

const quick = quickBackgroundMount(process.argv[1]!, process.argv.slice(2));
if (quick) process.exitCode = await quick;
else await import('./imgmount-main.js');
