/**
 * A real mount of the 1 KiB-block bigalloc layouts (superblock in block 1 although group 0 starts
 * at block 0) reads only the footer and the header from the image, and a walk with find (lstat
 * and readlink of every entry), stat(1) and getfattr -R -d (every xattr) reads nothing more: the
 * daemon's image read counter (SIGUSR1 stats) stays at what the mount read. The in-process check
 * of every layout is test/fs/ext4/header-only.test.ts; this one proves the kernel path agrees.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { promisify } from 'node:util';
import { FileSource } from '../../src/io/index.js';
import { ImageReader } from '../../src/image/image-reader.js';
import { fuseSuite } from './helpers.js';

const execFileP = promisify(execFile);
const LAYOUTS = ['ext4-bigalloc-1k', 'ext4-bigalloc-metabg-1k'];
/** ImageReader's first header read (a smaller image is read whole). */
const FIRST_READ = 1 << 20;

await fuseSuite('header-only', ['find', 'stat', 'getfattr'], async (h) => {

  for (const layout of LAYOUTS) {
    t.test(layout, async (t) => {
      const { img } = await h.image(layout, layout);
      const src = await FileSource.open(img);
      const header = (await ImageReader.open(src)).header;
      await src.close();
      const imageBytes = (await stat(img)).size;
      const mnt = await h.mountPoint(t, layout);

      const r = await h.imgmount(['-v', img, mnt]);
      t.equal(r.status, 0, `imgmount exits 0 ${r.stderr.trim()}`);
      const m = /header from the image; read from the image: (\d+) bytes in (\d+) reads/.exec(r.stdout.toString());
      t.ok(m, `-v reports the bytes read: ${r.stdout.toString().trim()}`);
      const mountBytes = Number(m?.[1]);
      t.equal(mountBytes, 64 + Math.max(header.dataOffset, Math.min(FIRST_READ, imageBytes)),
        'the mount read the footer and the header, nothing else (opening the tree read no frame)');

      const found = await execFileP('find', [mnt, '-printf', '%y %m %U %G %s %T@ %l\\n'], { maxBuffer: 1 << 26 });
      const lines = found.stdout.split('\n').filter(Boolean);
      t.ok(lines.length > 1000 && lines.some((l) => l.startsWith('l ')), `find listed ${lines.length} entries, symlinks among them`);
      await execFileP('sh', ['-c', 'find "$1" -print0 | xargs -0 stat > /dev/null', 'sh', mnt], { maxBuffer: 1 << 26 });
      const attrs = await execFileP('getfattr', ['-R', '-h', '-d', '-m', '-', mnt], { maxBuffer: 1 << 26 });
      t.match(attrs.stdout, /user\.big=/, 'getfattr read the xattrs (the large one in an xattr block too)');
      const s = await h.imageStats(mnt);
      t.equal(s.bytesRead, mountBytes, 'the walk read nothing from the image');

      const u = await h.unmount(mnt);
      t.equal(u.status, 0, `imgmount -u exits 0 ${u.stderr.trim()}`);
    });
  }
});
