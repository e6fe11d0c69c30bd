/** The trivial entry point the single-executable startup is timed with (docs/decisions/packaging.md). */
process.stdout.write('');
