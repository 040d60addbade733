package repo

// crashHook is called at the points where a killed process could leave the
// repository in a different state. The crash-safety tests make the real
// binary SIGKILL itself there (VIGIL_TEST_CRASH_AT); it does nothing otherwise.
var crashHook = func(point string) {}

// SetCrashHook installs fn as the crash hook. Only for tests.
func SetCrashHook(fn func(point string)) { crashHook = fn }
