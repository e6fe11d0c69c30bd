/**
 * Container names as Docker has them: given names are checked against Docker's pattern; a container
 * created without one gets a random "adjective_surname" name like Docker's, from our own short lists.
 */
import { randomInt } from 'node:crypto';
import { TetherError } from '../../../../protocol/src/errors/errors.ts';

const ADJECTIVES = [
  'brave',
  'calm',
  'clever',
  'eager',
  'fervent',
  'gallant',
  'happy',
  'jolly',
  'keen',
  'lucid',
  'merry',
  'nimble',
  'quiet',
  'relaxed',
  'sharp',
  'steady',
  'tender',
  'upbeat',
  'vivid',
  'witty',
];
const SURNAMES = [
  'babbage',
  'curie',
  'dijkstra',
  'euler',
  'faraday',
  'galois',
  'hopper',
  'hypatia',
  'kepler',
  'lamport',
  'liskov',
  'lovelace',
  'noether',
  'pascal',
  'ritchie',
  'shannon',
  'thompson',
  'turing',
  'wirth',
  'yonath',
];

const NAME_PATTERN = /^\/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;

export function validateName(name: string): string {
  if (!NAME_PATTERN.test(name))
    throw new TetherError(
      'TETHER_INVALID_PARAMETER',
      `Invalid container name (${name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed`,
    );
  return name.replace(/^\//, '');
}

export function generateName(): string {
  return `${ADJECTIVES[randomInt(ADJECTIVES.length)]}_${SURNAMES[randomInt(SURNAMES.length)]}`;
}
