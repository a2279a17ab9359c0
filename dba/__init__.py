"""DBA Studio's engine: fine-tune once with Dynamic Boosted Annealing (global-gradient boost, dynamic correction,
annealed learning rate). See README.md and docs/ for the algorithm as this project implements it."""
__version__ = "0.1.0"

from .errors import AnchorMismatchError, DataError, DBAError, ModelLoadError, TrainingError
from .models import LoadedModel, LoraSettings, cache_dir, load_model, weight_fingerprint
