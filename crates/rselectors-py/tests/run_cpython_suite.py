"""Runs CPython's own test suite for ``selectors`` (``test.test_selectors``,
installed with the interpreter) against ``rselectors``.

The test module's global ``selectors`` is replaced by ``rselectors``, and
each test case's ``SELECTOR`` (bound to the standard library's class when
the module was imported) by ours. Exits non-zero unless every test passes.

Usage: python run_cpython_suite.py [-v]
"""

import sys
import unittest

import rselectors

try:
    from test import test_selectors as suite
except ImportError as e:
    sys.exit(f"CPython's test package is not installed ({e}); on Debian: "
             "apt-get install libpython3-testsuite")

# test_modify_unregister patches 'selectors.<Cls>._selector_cls', the
# select.epoll / select.poll class that the pure-Python implementation
# wraps, with a mock whose modify() raises. Our selectors have no Python
# poller object to swap: the kernel calls are made by the Rust core. The
# behaviour it checks (a refused modify() unregisters the file object,
# bpo-30014) is tested with a real kernel error in
# tests/test_semantics.py::test_modify_refused_by_kernel_unregisters.
SKIPPED = {
    "test_modify_unregister": "mocks the pure-Python implementation's private "
    "_selector_cls (the select.epoll/select.poll object); rselectors has none",
}

# Each backend's test case where this machine has the backend (the suite's
# own skipUnless reads the standard library, whose class set ours equals).
CLASS_NAMES = ["DefaultSelector", "SelectSelector", "PollSelector", "EpollSelector",
               "DevpollSelector", "KqueueSelector"]
CASES = {
    getattr(suite, name + "TestCase"): getattr(rselectors, name)
    for name in CLASS_NAMES
    if hasattr(rselectors, name) and hasattr(suite, name + "TestCase")
}


def main():
    suite.selectors = rselectors
    loader = unittest.TestLoader()
    tests = unittest.TestSuite()
    for case, selector_class in CASES.items():
        case.SELECTOR = selector_class
        for name, reason in SKIPPED.items():
            if hasattr(case, name):
                setattr(case, name, unittest.skip(reason)(getattr(case, name)))
        tests.addTests(loader.loadTestsFromTestCase(case))

    verbosity = 2 if "-v" in sys.argv[1:] else 1
    result = unittest.TextTestRunner(verbosity=verbosity).run(tests)

    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    for test, reason in result.skipped:
        print(f"skipped: {test.id()}: {reason}")
    print(f"test_selectors: {passed} passed, {failed} failed, {skipped} skipped")
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
