"""Policies from a spec string, so that worker processes can build their own.

Specs:
    ``oracle``              the scripted oracle (reads ``obs["privileged"]``)
    ``oracle:C.F=V,...``    the oracle with grasp-spec field F of object category C set to V
                            metres (``envs.oracle_grasp.override_grasps``), e.g.
                            ``oracle:akita_black_bowl.height=0.025``; an undotted
                            ``F=V`` sets the oracle's own field F
                            (``envs.oracle.override_config``), e.g. ``oracle:hover_height=0.12``
    ``tcp://HOST:PORT``     a policy server over the project's ZeroMQ protocol
    ``CHECKPOINT_DIR``      a CogVLA checkpoint folder (has ``config.json``)
"""

from __future__ import annotations

from pathlib import Path

from cogvla.policy_api import Policy

__all__ = [
    "ORACLE",
    "PolicySpecError",
    "check_policy_spec",
    "is_oracle",
    "load_policy",
    "oracle_config_overrides",
    "oracle_grasp_overrides",
]

ORACLE = "oracle"
# How long a remote query may take before the episode is recorded as an error; CPU
# inference of the full model takes seconds, so this is generous.
_REMOTE_TIMEOUT_MS = 120_000
# The health check before an evaluation: a dead address fails in seconds, not per episode.
_PING_TIMEOUT_MS = 3_000
# A server still loading its model (a 7B load takes minutes) is waited for this long.
_READY_WAIT_S = 600.0


class PolicySpecError(ValueError):
    """A policy spec that is none of: oracle, tcp://HOST:PORT, checkpoint folder."""


def is_oracle(spec: str) -> bool:
    """Whether ``spec`` names the scripted oracle (which needs privileged observations)."""
    return spec == ORACLE or spec.startswith(ORACLE + ":")


def oracle_grasp_overrides(spec: str) -> dict[str, float]:
    """The ``category.field -> metres`` overrides of an oracle spec (empty for plain ``oracle``)."""
    return {key: value for key, value in _oracle_overrides(spec).items() if "." in key}


def oracle_config_overrides(spec: str) -> dict[str, float]:
    """The ``field -> value`` overrides of the oracle's own config in an oracle spec."""
    return {key: value for key, value in _oracle_overrides(spec).items() if "." not in key}


def _oracle_overrides(spec: str) -> dict[str, float]:
    _, _, text = spec.partition(":")
    overrides: dict[str, float] = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        try:
            overrides[key.strip()] = float(value)
        except ValueError:  # also an item without "=", whose value is ""
            raise PolicySpecError(f"policy: {item!r} in {spec!r}: expected CATEGORY.FIELD=METRES") from None
    return overrides


def _oracle(spec: str) -> Policy:
    from envs.oracle import OracleConfigError, ScriptedOracle, override_config
    from envs.oracle_grasp import GraspOverrideError, override_grasps

    try:
        return ScriptedOracle(
            override_config(oracle_config_overrides(spec)),
            grasps=override_grasps(oracle_grasp_overrides(spec)),
        )
    except (GraspOverrideError, OracleConfigError) as exc:
        raise PolicySpecError(f"policy: {exc}") from None


def check_policy_spec(spec: str) -> str:
    """Validate ``spec`` cheaply (nothing is loaded, a server is pinged) and return it normalized."""
    spec = _normalized(spec)
    if spec.startswith("tcp://"):
        _check_server(spec)
    return spec


def _normalized(spec: str) -> str:
    if is_oracle(spec):
        _oracle(spec)
        return spec
    if spec.startswith("tcp://"):
        host, _, port = spec[len("tcp://") :].rpartition(":")
        if not host or not port.isdigit():
            raise PolicySpecError(f"policy: expected tcp://HOST:PORT, got {spec!r}")
        return spec
    path = Path(spec).expanduser()
    if not (path / "config.json").is_file():
        raise PolicySpecError(
            "policy: expected 'oracle', 'tcp://HOST:PORT' or a checkpoint folder with config.json, "
            f"got {spec!r}"
        )
    return str(path.resolve())


def _check_server(endpoint: str) -> None:
    from deploy.client import ClientError, PolicyClient

    with PolicyClient(endpoint, timeout_ms=_PING_TIMEOUT_MS, retries=0) as client:
        try:
            client.wait_ready(_READY_WAIT_S)
        except ClientError as exc:
            raise PolicySpecError(
                f"policy: {endpoint} is not a ready policy server ({exc}); check it with `cogvla ping {endpoint}`"
            ) from None


def load_policy(spec: str) -> Policy:
    """Build the policy named by ``spec`` (see the module docstring).

    A server is not pinged here: workers build their policies after ``check_policy_spec``
    did, and a server restarting later is an episode's infrastructure error, not a bad spec.
    """
    spec = _normalized(spec)
    if is_oracle(spec):
        return _oracle(spec)
    if spec.startswith("tcp://"):
        from deploy.client import PolicyClient

        return PolicyClient(spec, timeout_ms=_REMOTE_TIMEOUT_MS)
    from cogvla.policy import CogVLAPolicy

    return CogVLAPolicy.from_pretrained(spec)
