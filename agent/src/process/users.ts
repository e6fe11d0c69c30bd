/**
 * Resolves a container user spec (`name`, `uid`, `name:group`, `uid:gid`, …) against the root
 * filesystem's /etc/passwd and /etc/group, as Docker does: names must exist, numbers need not, and the
 * supplementary groups are every group that lists the user as a member.
 */
import { TetherError } from '../../../protocol/src/errors/errors.ts';

export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

export interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

export interface ResolvedUser {
  uid: number;
  gid: number;
  /** Supplementary groups, including the primary gid as Docker does. */
  groups: number[];
  home: string;
  name?: string;
}

function lines(text: string): string[][] {
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => line.split(':'));
}

/** Linux ids are u32, and 4294967295 means "no id" to setuid(2). */
const isId = (text: string | undefined): text is string =>
  text !== undefined && /^\d{1,10}$/.test(text) && Number(text) <= 0xfffffffe;

export function parsePasswd(text: string): PasswdEntry[] {
  return lines(text).flatMap(([name, , uid, gid, , home, shell]) =>
    name && isId(uid) && isId(gid)
      ? [{ name, uid: Number(uid), gid: Number(gid), home: home || '/', shell: shell ?? '' }]
      : [],
  );
}

export function parseGroup(text: string): GroupEntry[] {
  return lines(text).flatMap(([name, , gid, members]) =>
    name && isId(gid)
      ? [{ name, gid: Number(gid), members: members ? members.split(',').filter(Boolean) : [] }]
      : [],
  );
}

export function resolveUser(spec: string, passwd: PasswdEntry[], groups: GroupEntry[]): ResolvedUser {
  const parts = spec.split(':');
  const [userPart = '', groupPart] = parts;
  if (parts.length > 2) {
    throw new TetherError(
      'TETHER_USER_UNKNOWN',
      `user "${spec}": expected user or user:group, with at most one colon`,
    );
  }
  if (userPart === '') {
    throw new TetherError(
      'TETHER_USER_UNKNOWN',
      `user "${spec}": the user part is empty; give a name or a uid`,
    );
  }
  const byName = passwd.find((entry) => entry.name === userPart);
  const entry = isId(userPart) ? (passwd.find((e) => e.uid === Number(userPart)) ?? undefined) : byName;
  if (!isId(userPart) && !entry) {
    throw new TetherError(
      'TETHER_USER_UNKNOWN',
      `unable to find user ${userPart}: no matching entries in passwd file; use a uid or add the user to the image's /etc/passwd`,
    );
  }
  const uid = isId(userPart) ? Number(userPart) : entry!.uid;
  let gid = entry?.gid ?? 0;
  if (groupPart !== undefined && groupPart !== '') {
    if (isId(groupPart)) gid = Number(groupPart);
    else {
      const group = groups.find((g) => g.name === groupPart);
      if (!group) {
        throw new TetherError(
          'TETHER_USER_UNKNOWN',
          `unable to find group ${groupPart}: no matching entries in group file; use a gid or add the group to /etc/group`,
        );
      }
      gid = group.gid;
    }
  }
  const supplementary = entry
    ? groups.filter((group) => group.members.includes(entry.name)).map((group) => group.gid)
    : [];
  // An explicit group replaces the user's group list, as `docker run -u user:group` does.
  const all = groupPart ? [gid] : [gid, ...supplementary];
  const resolved: ResolvedUser = { uid, gid, groups: [...new Set(all)], home: entry?.home ?? '/' };
  if (entry) resolved.name = entry.name;
  return resolved;
}
