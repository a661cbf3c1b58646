# Moved to flashgp.preconditioners.blocks; this old path is that very module (sys.modules alias),
# so existing imports, and monkeypatching of its constants, keep working.
import sys

from ..preconditioners import blocks as _moved

sys.modules[__name__] = _moved
