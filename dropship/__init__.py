"""dropship: release automation on Prefect.

The core (this package) is plain typed Python with no Prefect imports, so it
can be tested without an engine; `flows/`, `tasks/` and `blocks/` are the thin
Prefect layer over it.
"""

from dropship.errors import DropshipError

__all__ = ["DropshipError", "__version__"]
__version__ = "0.1.0"
