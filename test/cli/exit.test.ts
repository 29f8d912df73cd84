/** exit.ts: every error code has its documented exit status; only EINTERNAL (and non-ImgErrors) is 70. */
import t from 'tap';
import { ERROR_CODES, type ErrorCode } from '../../src/errors/index.js';
import { EXIT, exitCodeFor } from '../../src/cli/exit.js';

// The statuses the man pages promise (EXIT STATUS), written out here independently of exit.ts.
const EXPECTED: Record<ErrorCode, number> = {
  ETRUNC: 3, EMAGIC: 3, EVERSION: 3, ECHECKSUM: 3, ERANGE: 3, ECORRUPT: 3, EUNSUPPORTED: 3, EINVAL: 3,
  ESHORT: 4, EIO: 4, ENOSPC: 4,
  ENOENT: 4, ENOTDIR: 4, EISDIR: 4, ELOOP: 4, ENODATA: 4, EROFS: 4, EEXIST: 4,
  EUSAGE: 2, EMOUNT: 5, EPARTIAL: 1, EINTERRUPTED: 130, EINTERNAL: 70,
  EMOUNTED: 6, EFREEZE: 6, EFREEZETIMEOUT: 6, ENOPARENT: 4, EBADPARENT: 3,
  ENOSUCHKEY: 4, EACCESS: 4, EEXISTS: 4, ECHANGED: 4, ES3: 4, ENETWORK: 4,
  ENOTLIVE: 5, ELIVEBUSY: 5, ENOPOINT: 2,
};

for (const code of ERROR_CODES) {
  t.test(`${code} exits with ${EXPECTED[code]}`, async (t) => {
    t.equal(exitCodeFor(code), EXPECTED[code]);
    if (code !== 'EINTERNAL') t.not(exitCodeFor(code), EXIT.INTERNAL, 'only our own bugs are "internal error"');
  });
}

t.test('no code: internal error', async (t) => {
  t.equal(exitCodeFor(undefined), EXIT.INTERNAL);
});
