// ESM TypeScript under jest: @swc/jest strips types (tsc --noEmit checks them in CI);
// node's vm modules (NODE_OPTIONS=--experimental-vm-modules in `npm test`) load ESM-only deps.
export default {
  testEnvironment: 'node',
  extensionsToTreatAsEsm: ['.ts'],
  transform: {
    '^.+\\.ts$': [
      '@swc/jest',
      { jsc: { parser: { syntax: 'typescript' }, target: 'es2022' }, module: { type: 'es6' } },
    ],
  },
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  testMatch: ['<rootDir>/tests/**/*.test.ts'],
  testTimeout: 60_000,
  // End-to-end suites start real processes; two jest workers fit a 2-core machine.
  maxWorkers: 2,
};
