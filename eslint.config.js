// ESLint 9 flat config. Formatting is Prettier's job (eslint-config-prettier turns the stylistic rules off); the rules here
// are the ones that catch bugs, above all promises nobody awaits: a floating promise in a daemon is an unhandled rejection
// or a write that races the next one.
import js from '@eslint/js';
import prettier from 'eslint-config-prettier';
import globals from 'globals';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

export default defineConfig(
  { ignores: ['dist/', 'node_modules/', '.data/', 'grafana/', 'prometheus/'] },
  js.configs.recommended,
  tseslint.configs.recommendedTypeChecked,
  {
    files: ['**/*.ts'],
    languageOptions: {
      // One program for src, projections and test: type-aware rules need every file in a tsconfig.
      parserOptions: { project: './tsconfig.test.json', tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // Query rows, JSON bodies and dynamically imported projection modules are `any` by nature here; flagging every
      // member access on them drowns the findings that matter.
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      // Without noUncheckedIndexedAccess every `rows[0]!` is "unnecessary", but it marks where a row is known to exist.
      '@typescript-eslint/no-unnecessary-type-assertion': 'off',
      // An async function without await is how a synchronous implementation of an async interface is written.
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' },
      ],
      // Bugs the recommended sets leave out: a promise returned (not awaited) inside try escapes its catch, and a switch
      // over a union that forgets a member.
      '@typescript-eslint/return-await': ['error', 'in-try-catch'],
      '@typescript-eslint/switch-exhaustiveness-check': ['error', { considerDefaultExhaustiveForUnions: true }],
      eqeqeq: ['error', 'always', { null: 'ignore' }],
      // `let runner; onSignal(() => runner?.stop()); runner = new Runner(...)`: read by a closure before it is assigned.
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
    },
  },
  {
    // Plain JavaScript (this file, projection fixtures): no type information.
    files: ['**/*.js', '**/*.mjs'],
    extends: [tseslint.configs.disableTypeChecked],
    languageOptions: { globals: globals.node },
  },
  prettier,
);
