"""The product version. `build.sh` stamps BUILD into the frozen binary; never read
package metadata at runtime (a frozen program may have none)."""

VERSION = "0.1.0"
BUILD = "dev"


def version_string() -> str:
    return f"Wafer PBX {VERSION} ({BUILD})"
