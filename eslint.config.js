// One config for the whole tree. The import bans keep the architecture's arrows true:
// protocol/ is pure (no I/O, no transport libraries), and agent/ and hostside/ never import each other.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const ioModules = [
  'node:net',
  'node:fs',
  'node:fs/promises',
  'node:child_process',
  'ssh2',
  'ws',
  'node-pty',
  'tar-fs',
];

export default tseslint.config(
  { ignores: ['node_modules/**', 'dist/**', 'bin/**', 'build/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': [
        'error',
        // node:test's describe/it return promises the runner itself awaits.
        {
          allowForKnownSafeCalls: [
            { from: 'package', package: 'node:test', name: ['describe', 'it', 'test', 'suite'] },
          ],
        },
      ],
      '@typescript-eslint/explicit-function-return-type': ['error', { allowExpressions: true }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      eqeqeq: ['error', 'always'],
      'no-throw-literal': 'error',
    },
  },
  {
    files: ['test/**/*.ts', 'bench/**/*.ts'],
    rules: { '@typescript-eslint/explicit-function-return-type': 'off' },
  },
  {
    files: ['protocol/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { paths: ioModules, patterns: ['**/agent/**', '**/hostside/**'] }],
    },
  },
  {
    files: ['agent/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['**/hostside/**'] }] },
  },
  {
    files: ['hostside/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['**/agent/**'] }] },
  },
);
