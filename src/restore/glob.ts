/**
 * Shell-style globs for one path component, as sh and fnmatch(3) with FNM_PERIOD: `*` (any run
 * of characters), `?` (one character), `[abc]`, `[a-z]`, `[!abc]` / `[^abc]`, and `\x` for a
 * literal x. A leading '.' in a name is matched only by a literal '.'. `/` never occurs in a
 * component. Names are raw bytes: they are matched as UTF-8 text (an invalid byte becomes
 * U+FFFD, which `*`, `?` and negated classes match).
 * Pure functions, no I/O.
 */

export interface ComponentPattern {
  /** The component exactly (backslashes removed) when it holds no glob characters. */
  literal?: Uint8Array;
  /** The matcher when it does. */
  test?: (name: Uint8Array) => boolean;
}

const decoder = new TextDecoder('utf-8', { fatal: false });

/** Whether `s` holds an unescaped `*`, `?` or a `[` with a closing `]`. */
export function hasGlob(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '\\') { i++; continue; }
    if (c === '*' || c === '?') return true;
    if (c === '[' && classEnd(s, i) > 0) return true;
  }
  return false;
}

/** Index of the `]` closing the class opened at `open`, or −1. */
function classEnd(s: string, open: number): number {
  let i = open + 1;
  if (s[i] === '!' || s[i] === '^') i++;
  if (s[i] === ']') i++; // a leading ']' is literal
  for (; i < s.length; i++) {
    if (s[i] === '\\') { i++; continue; }
    if (s[i] === ']') return i;
  }
  return -1;
}

/** Escapes a character outside a class (u-mode allows escaping only syntax characters). */
function escapeRe(c: string): string { return /[\\^$.*+?()[\]{}|/]/.test(c) ? `\\${c}` : c; }
/** Escapes a character inside a class. */
function escapeClass(c: string): string { return /[\\\]\[^-]/.test(c) ? `\\${c}` : c; }

/** `s` with its backslash escapes removed. */
export function unescapeGlob(s: string): string { return s.replace(/\\(.)/gsu, '$1'); }

export function compileComponent(s: string): ComponentPattern {
  if (!hasGlob(s)) return { literal: Buffer.from(unescapeGlob(s), 'utf8') };
  let re = '';
  const chars = [...s];
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i]!;
    if (c === '\\' && i + 1 < chars.length) { re += escapeRe(chars[++i]!); continue; }
    if (c === '*') { re += '[\\s\\S]*'; continue; }
    if (c === '?') { re += '[\\s\\S]'; continue; }
    if (c === '[') {
      const end = findClassEnd(chars, i);
      if (end < 0) { re += '\\['; continue; }
      let j = i + 1;
      let neg = false;
      if (chars[j] === '!' || chars[j] === '^') { neg = true; j++; }
      let body = '';
      let first = true;
      for (; j < end; j++) {
        let ch = chars[j]!;
        if (ch === '\\' && j + 1 < end) ch = chars[++j]!;
        else if (ch === ']' && !first) break;
        if (chars[j + 1] === '-' && j + 2 < end) {
          let hi = chars[j + 2]!;
          let k = j + 2;
          if (hi === '\\' && k + 1 < end) hi = chars[++k]!;
          body += `${escapeClass(ch)}-${escapeClass(hi)}`;
          j = k;
        } else {
          body += escapeClass(ch);
        }
        first = false;
      }
      re += neg ? `[^${body}]` : `[${body}]`;
      i = end;
      continue;
    }
    re += escapeRe(c);
  }
  const rx = new RegExp(`^(?:${re})$`, 'u');
  const dotLiteral = s.startsWith('.') || s.startsWith('\\.');
  return {
    test: (name: Uint8Array): boolean => {
      const text = decoder.decode(name);
      if (text.startsWith('.') && !dotLiteral) return false;
      return rx.test(text);
    },
  };
}

/** classEnd over code points (so a class holding non-BMP characters is found correctly). */
function findClassEnd(chars: string[], open: number): number {
  let i = open + 1;
  if (chars[i] === '!' || chars[i] === '^') i++;
  if (chars[i] === ']') i++;
  for (; i < chars.length; i++) {
    if (chars[i] === '\\') { i++; continue; }
    if (chars[i] === ']') return i;
  }
  return -1;
}
