"""unveil: explain why a neural network made a prediction.

    import unveil
    model = unveil.load_model()
    exp = unveil.explain(model, "cat.jpg", method="lime", seed=0)
    row = unveil.explain_tabular(clf.predict_proba, X[0], background=X, method="kernelshap")
"""

from .api import DEFAULT_METHOD, explain
from .explanation import Explanation
from .images import load_image
from .methods.registry import method_names, method_specs, register
from .models import Model, as_model, imagenet_labels, load_model
from .tuning import tune_cpu
from . import metrics
from .compare import compare
from .tabular_explain import explain_tabular, tabular_methods

__version__ = "0.1.0"


def methods() -> list[str]:
    """Names of the registered explanation methods."""
    return method_names()


__all__ = [
    "explain",
    "explain_tabular",
    "tabular_methods",
    "compare",
    "metrics",
    "Explanation",
    "Model",
    "as_model",
    "load_model",
    "load_image",
    "imagenet_labels",
    "methods",
    "method_specs",
    "register",
    "tune_cpu",
    "DEFAULT_METHOD",
    "__version__",
]
