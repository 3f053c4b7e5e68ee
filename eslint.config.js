// ESLint with type-checked rules; `npm run lint` runs it with --max-warnings 0.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: [
      'node_modules/',
      'dist/',
      'client/dist/',
      'client/extension/dist/',
      'benchmarks/results/',
      'data/',
      'models/**/*.py',
      'eslint.config.js',
      'bin/',
      'scripts/*.mjs',
      'vitest.config.ts',
    ],
  },
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      'no-console': ['error'],
    },
  },
  { files: ['tests/**', 'benchmarks/**', 'scripts/**', 'server/cli/**'], rules: { 'no-console': 'off' } },
);
