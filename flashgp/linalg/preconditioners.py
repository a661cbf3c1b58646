# Moved to flashgp.preconditioners.pivoted_cholesky; this old path is that very module (sys.modules alias),
# so existing imports, and monkeypatching of its constants, keep working.
import sys

from ..preconditioners import pivoted_cholesky as _moved

sys.modules[__name__] = _moved
