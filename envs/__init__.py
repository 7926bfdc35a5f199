"""Simulation environments speaking the policy observation schema (``cogvla.policy_api``).

Kept import-free: ``envs.libero_env`` pulls in LIBERO/robosuite only when imported.
Importing any of it first silences robosuite's import-time macro advice (``envs.quiet``).
"""

from envs.quiet import silence_robosuite_macro_warnings

__all__: list[str] = []

silence_robosuite_macro_warnings()
