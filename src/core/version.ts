// Single source of the version string reported by `dcli --version`, workers and the API.
export const VERSION = '0.1.0';
