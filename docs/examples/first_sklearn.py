import numpy as np
from flashgp.sklearn import GPRegressor

# any units: the estimator standardizes inputs and targets inside
rng = np.random.default_rng(0)
X = rng.uniform(0, 10, size=(500, 2))
y = 3 * np.sin(X[:, 0]) + np.cos(0.5 * X[:, 1]) + rng.normal(0, 0.3, size=500)
X_train, y_train, X_test, y_test = X[:400], y[:400], X[400:], y[400:]

gp = GPRegressor(kernel="matern52", random_state=0)
gp.fit(X_train, y_train)
mean, std = gp.predict(X_test, return_std=True)  # in y's units, noise included

print("R^2 on held-out rows:", round(gp.score(X_test, y_test), 4))
print("lengthscales:", gp.lengthscale_.round(3))
print("noise variance:", round(gp.noise_, 4))
print("first predictions:", mean[:3].round(3), "+/-", (1.96 * std[:3]).round(3))
