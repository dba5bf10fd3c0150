# Runs firmware test modules under the MicroPython unix port:
#   micropython run_mpy.py test_fw_codes [more modules...]
# Calls every test_* function; prints "PASS name" / "FAIL name: error";
# exits 1 if anything failed.

import sys

failed = 0
passed = 0
for name in sys.argv[1:]:
    mod = __import__(name)
    for attr in sorted(dir(mod)):
        if not attr.startswith("test_"):
            continue
        fn = getattr(mod, attr)
        try:
            fn()
            passed += 1
            print("PASS", name + "." + attr)
        except Exception as e:
            failed += 1
            print("FAIL", name + "." + attr + ":", repr(e))
            sys.print_exception(e)
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
