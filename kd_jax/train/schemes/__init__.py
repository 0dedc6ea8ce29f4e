"""Training schemes: what one step trains.

  * `distill`: frozen teachers, one student, a weighted sum of distillers (offline distillation).
  * `mutual`: K networks trained together, each distilling from the others (Deep Mutual Learning).
  * `adversarial`: K networks and one feature-map discriminator each, in a ring (AFD).

Each module has `create_train_state`, `init_optimizer`, `model_variables` and `train_step` (pure, jitted
once with its static arguments bound by `kd_jax.train.run.step_function`).
"""
