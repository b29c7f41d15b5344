"""Make ``zoo_tools`` (this folder) and the repo root importable under any pytest import mode."""
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for _p in (str(_HERE), str(_HERE.parents[1])):
    if _p not in sys.path:
        sys.path.insert(0, _p)
