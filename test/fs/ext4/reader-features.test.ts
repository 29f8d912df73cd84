// Ext4Tree on what the shared fixtures do not hold, built here with mke2fs -d (+ debugfs ea_set):
// a 5 GiB sparse file (i_size_high, data past 4 GiB), a depth-2 extent tree (2,000 one-block
// extents on 1 KiB blocks), a value stored in an EA inode (ea_inode), and POSIX ACLs (ext4's
// compact on-disk form converted back to the system.posix_acl_* value the kernel returns).
// Skips when e2fsprogs or setfattr is missing.

import t from 'tap';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openExt4 } from '../../../src/fs/ext4/reader.js';
import { FileSource } from '../../../src/io/index.js';
import { haveTools, run, tool, toolEnv } from '../../fixtures/exec.js';
import { runDebugfs } from '../../fixtures/debugfs.js';
import { Rng } from '../../fixtures/prng.js';

const GiB = 2 ** 30;
// posix_acl_xattr: version 2; USER_OBJ rw-, USER 1000 r--, GROUP_OBJ r--, MASK r--, OTHER ---.
const ACL_ACCESS = Buffer.from('02000000010006000000000002000400e8030000040004000000000010000400000000002000000000000000', 'hex');
// A default ACL on a directory: USER_OBJ rwx, GROUP_OBJ r-x, GROUP 2000 rwx, MASK rwx, OTHER r-x.
const ACL_DEFAULT = Buffer.from('02000000' + '0100070000000000' + '0400050000000000' + '08000700d0070000' + '1000070000000000' + '2000050000000000', 'hex');

/** The kernel's getxattr form of an ACL: short entries carry id 0xffffffff. */
function canonicalAcl(acl: Buffer): Buffer {
  const out = Buffer.from(acl);
  for (let p = 4; p < out.length; p += 8) {
    const tag = out.readUInt16LE(p);
    if (tag !== 2 && tag !== 8) out.writeUInt32LE(0xffffffff, p + 4);
  }
  return out;
}

const tools = await haveTools(['mke2fs', 'debugfs', 'setfattr']);
if (!tools.ok) {
  t.plan(0, `tools missing: ${tools.missing.join(', ')}`);
} else {
  const dir = await mkdtemp(join(tmpdir(), 'imgmount-features-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const src = join(dir, 'src');
  await mkdir(join(src, 'acl-dir'), { recursive: true });
  const rng = new Rng('reader-features');
  const island = rng.bytes(5000);
  {
    const fh = await open(join(src, 'huge.bin'), 'w');
    await fh.write(island, 0, island.length, 4.5 * GiB + 3);
    await fh.truncate(5 * GiB);
    await fh.close();
  }
  // Every other 1 KiB block: 2,000 extents of one block, more than a depth-1 tree holds on 1 KiB blocks.
  const frag = Buffer.alloc(4000 * 1024);
  for (let i = 0; i < 4000; i += 2) rng.bytes(1024).copy(frag, i * 1024);
  await writeFile(join(src, 'frag.bin'), frag);
  await writeFile(join(src, 'acl.txt'), 'has an acl\n');
  await writeFile(join(src, 'ea.txt'), 'has a value in an EA inode\n');
  const setfattr = await tool('setfattr');
  let aclOk = true;
  try {
    await run(setfattr, ['-n', 'system.posix_acl_access', '-v', `0x${ACL_ACCESS.toString('hex')}`, join(src, 'acl.txt')]);
    await run(setfattr, ['-n', 'system.posix_acl_default', '-v', `0x${ACL_DEFAULT.toString('hex')}`, join(src, 'acl-dir')]);
  } catch {
    aclOk = false; // the host filesystem has no ACL support
  }
  const env = toolEnv();
  const mkfs = async (name: string, args: string[]): Promise<string> => {
    const image = join(dir, name);
    await writeFile(image, '');
    await run(await tool('truncate'), ['-s', '64M', image]);
    await run(await tool('mke2fs'), ['-q', '-F', '-t', 'ext4', ...args, '-d', src, image], { env });
    return image;
  };
  const img4k = await mkfs('ea.img', ['-b', '4096', '-O', 'ea_inode']);
  const eaValue = rng.bytes(4096); // debugfs ea_set -f stores at most one block; too big for the xattr block
  await writeFile(join(dir, 'ea.val'), eaValue);
  await runDebugfs(img4k, [`ea_set -f ${join(dir, 'ea.val')} /ea.txt user.big`], { write: true });
  const img1k = await mkfs('frag.img', ['-b', '1024']);

  t.test('a 5 GiB sparse file: size_high, data past 4 GiB, holes', async (t) => {
    const vol = await FileSource.open(img4k);
    t.teardown(() => vol.close());
    const tree = await openExt4(vol);
    const ino = await tree.lookup(tree.rootIno, Buffer.from('huge.bin'));
    const st = await tree.stat(ino);
    t.equal(st.size, 5 * GiB, 'size');
    t.equal(st.blocks, 16, 'two 4 KiB blocks allocated');
    t.same(await tree.extents(ino), [{ fileBlock: (4.5 * GiB) / 4096, volumeBlock: (await tree.extents(ino))[0]!.volumeBlock, lenBlocks: 2 }]);
    t.same(Buffer.from(await tree.read(ino, 4.5 * GiB + 3, island.length)), island, 'the island');
    const around = Buffer.from(await tree.read(ino, 4.5 * GiB - 10, 20));
    t.same(around, Buffer.concat([Buffer.alloc(13), island.subarray(0, 7)]), 'a read across the hole/data edge');
    t.same(Buffer.from(await tree.read(ino, 4 * GiB + 7, 100)), Buffer.alloc(100), 'the hole reads as zeros');
    t.equal((await tree.read(ino, 5 * GiB - 5, 100)).byteLength, 5, 'the read is clamped at EOF');
  });

  t.test('a depth-2 extent tree', async (t) => {
    const vol = await FileSource.open(img1k);
    t.teardown(() => vol.close());
    const tree = await openExt4(vol);
    const ino = await tree.lookup(tree.rootIno, Buffer.from('frag.bin'));
    const ex = await run(await tool('debugfs'), ['-R', 'ex /frag.bin', img1k], { env });
    t.match(ex.stdout, /^\s*0\/\s*2\s/m, 'debugfs shows a depth-2 tree');
    const runs = await tree.extents(ino);
    t.equal(runs.length, 2000, '2,000 data runs');
    t.ok(runs.every((r, i) => r.fileBlock === 2 * i && r.lenBlocks === 1), 'one block every other block');
    const got = Buffer.alloc(frag.length);
    for (let pos = 0; pos < frag.length; pos += 128 * 1024) Buffer.from(await tree.read(ino, pos, 128 * 1024)).copy(got, pos);
    t.equal(createHash('sha256').update(got).digest('hex'), createHash('sha256').update(frag).digest('hex'), 'content');
  });

  t.test('a value in an EA inode', async (t) => {
    const vol = await FileSource.open(img4k);
    t.teardown(() => vol.close());
    const tree = await openExt4(vol);
    const ino = await tree.lookup(tree.rootIno, Buffer.from('ea.txt'));
    const stat = await run(await tool('debugfs'), ['-R', 'stat /ea.txt', img4k], { env });
    t.match(stat.stdout, /user\.big \(4096\)/, 'debugfs lists the attribute');
    t.same(await tree.listxattr(ino), ['user.big']);
    t.same(Buffer.from(await tree.getxattr(ino, 'user.big')), eaValue, 'the value from the EA inode');
  });

  t.test('POSIX ACLs come back in the system.posix_acl_* value format', { skip: aclOk ? false : 'the host filesystem has no ACLs' }, async (t) => {
    const vol = await FileSource.open(img4k);
    t.teardown(() => vol.close());
    const tree = await openExt4(vol);
    const file = await tree.lookup(tree.rootIno, Buffer.from('acl.txt'));
    const d = await tree.lookup(tree.rootIno, Buffer.from('acl-dir'));
    t.same(await tree.listxattr(file), ['system.posix_acl_access']);
    t.same(Buffer.from(await tree.getxattr(file, 'system.posix_acl_access')), canonicalAcl(ACL_ACCESS), 'access ACL');
    t.same(Buffer.from(await tree.getxattr(d, 'system.posix_acl_default')), canonicalAcl(ACL_DEFAULT), 'default ACL');
    t.equal((await tree.stat(file)).mode & 0o777, 0o640, 'the mode carries the mask');
  });
}
