"""Prints the scikit-learn values that tests/metrics.rs checks deriv::metrics against.

Run: python tests/data/make_sklearn_metrics.py  (scikit-learn 1.9.1 and numpy printed these)
The inputs here are the same literals as in tests/metrics.rs.
"""
import numpy as np
import sklearn
from sklearn import metrics as M

print("scikit-learn", sklearn.__version__, "numpy", np.__version__)

# Multiclass labels with gaps (no 1, 3 or 4) and a class (7) that is only predicted.
y_true = [0, 2, 5, 5, 2, 0, 0, 5, 2, 2, 5, 0, 2, 5, 5, 0]
y_pred = [0, 5, 5, 2, 2, 0, 2, 5, 7, 2, 5, 0, 0, 5, 2, 7]
print("accuracy", repr(M.accuracy_score(y_true, y_pred)))
print("confusion", M.confusion_matrix(y_true, y_pred).ravel().tolist())
for avg in ["micro", "macro", "weighted"]:
    print("f1", avg, repr(M.f1_score(y_true, y_pred, average=avg, zero_division=0)))

# Binary.
b_true = [1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0]
b_pred = [1, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 1]
print("binary accuracy", repr(M.accuracy_score(b_true, b_pred)))
print("binary f1", repr(M.f1_score(b_true, b_pred)))
print("binary confusion", M.confusion_matrix(b_true, b_pred).ravel().tolist())
# No positive anywhere: F1 of class 1 is 0/0, scored 0.
print("binary f1 no positives", repr(M.f1_score([0, 0, 0], [0, 0, 0], zero_division=0)))

# Regression, one output.
r_true = [3.0, -0.5, 2.0, 7.0, 4.25, -1.5, 0.0, 2.5]
r_pred = [2.5, 0.0, 2.1, 7.8, 3.0, -1.0, 0.5, 2.5]
print("r2", repr(M.r2_score(r_true, r_pred)))
print("mse", repr(M.mean_squared_error(r_true, r_pred)))
print("mae", repr(M.mean_absolute_error(r_true, r_pred)))

# Two outputs: uniform average over the outputs.
m_true = [[0.5, 1.0], [-1.0, 1.0], [7.0, -6.0], [2.0, 3.5]]
m_pred = [[0.0, 2.0], [-1.0, 2.0], [8.0, -5.0], [1.5, 3.0]]
print("r2 2d", repr(M.r2_score(m_true, m_pred)))
print("mse 2d", repr(M.mean_squared_error(m_true, m_pred)))
print("mae 2d", repr(M.mean_absolute_error(m_true, m_pred)))

# A constant target: 1 when predicted exactly, 0 otherwise (force_finite).
print("r2 constant exact", repr(M.r2_score([2.0, 2.0, 2.0], [2.0, 2.0, 2.0])))
print("r2 constant off", repr(M.r2_score([2.0, 2.0, 2.0], [2.0, 2.5, 2.0])))
