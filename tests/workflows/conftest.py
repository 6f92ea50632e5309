import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "nn"))

import torch  # noqa: E402

# Tiny graphs gain nothing from intra-op threads, and the CI machine is shared: one thread.
torch.set_num_threads(1)
