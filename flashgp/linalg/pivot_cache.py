# Moved to flashgp.preconditioners.pivot_state; this old path is that very module (sys.modules alias),
# so existing imports, and monkeypatching of its constants, keep working.
import sys

from ..preconditioners import pivot_state as _moved

sys.modules[__name__] = _moved
