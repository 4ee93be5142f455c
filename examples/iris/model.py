"""Iris reference model: median imputer -> standard scaler -> logistic regression.

Trained deterministically on scikit-learn's bundled iris data (no download).
"""

from __future__ import annotations

import os

import joblib
from sklearn.datasets import load_iris
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

FEATURES: list[str] = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
CLASSES: list[str] = ["setosa", "versicolor", "virginica"]


def build_model() -> Pipeline:
    """Return a Pipeline fitted on the full iris data set.

    The fitted ``classes_`` are the iris target names (strings), so
    ``predict`` returns class names directly.
    """
    iris = load_iris()
    labels = iris.target_names[iris.target]  # array of str, e.g. "setosa"
    pipeline = Pipeline(
        steps=[
            ("impute", SimpleImputer(strategy="median")),
            ("scale", StandardScaler()),
            ("clf", LogisticRegression(max_iter=1000)),
        ]
    )
    pipeline.fit(iris.data, labels)
    return pipeline


def load_or_train(path: str | None) -> Pipeline:
    """Load the joblib artifact at ``path`` if it exists; else train it.

    When ``path`` is given but missing, the freshly trained model is saved
    there (parent directories are created).
    """
    if path and os.path.exists(path):
        model: Pipeline = joblib.load(path)
        return model
    model = build_model()
    if path:
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        joblib.dump(model, path)
    return model
