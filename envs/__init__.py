"""Simulation environments speaking the policy observation schema (``cogvla.policy_api``).

Kept import-free: ``envs.libero_env`` pulls in LIBERO/robosuite only when imported.
"""

__all__: list[str] = []
