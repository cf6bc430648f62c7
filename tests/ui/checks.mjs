// The checks a browser script prints: one line each, then "N passed, M failed", which
// tests/dashboard.rs reads; the process exits non-zero on any failure.
let passed = 0;
let failed = 0;

export function check(what, ok, detail = '') {
  if (ok) passed += 1;
  else failed += 1;
  console.log(`${ok ? 'ok' : 'FAILED'} - ${what}${!ok && detail ? `: ${detail}` : ''}`);
}

export function finish() {
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}
