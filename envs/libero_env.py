"""A gymnasium env around LIBERO's ``OffScreenRenderEnv``, speaking the policy schema.

Usage::

    from envs.libero_env import LiberoEnv

    env = LiberoEnv("libero_spatial", task_id=0, image_size=128, fast_render=True)
    obs, info = env.reset(seed=7, options={"init_state_id": 3})
    obs, reward, terminated, truncated, info = env.step(np.zeros(7))
    env.close()

Observations follow ``cogvla.policy_api`` (upright images, 8-D state, ``prompt``).
On a CPU a camera costs several times the physics of a step, yet an open-loop policy reads
one observation in several, and settle steps none. With ``lazy_images=True`` (a ``step``
argument, a ``reset`` option) the observation is a ``LazyObservation`` whose images are
rendered when first read, so a step nobody looks at costs physics only.
Resets either restore one of the benchmark's fixed init states (evaluation) or, with
``options={"randomize": True}``, sample fresh object placements from the BDDL regions
(demo generation), re-placing what LIBERO's sampler puts off a fixture's region until the
task's ``:init`` holds (``envs.initial_state``). A randomized reset starts the arm from one
pose unless ``joint_noise`` perturbs its joints, as robosuite's default noise spreads the
fixed init states' start poses. Episode length is the caller's business:
``truncated`` is always False and the robosuite horizon is disabled.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import replace
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from envs.fast_render import fast_render as fast_render_scope
from envs.initial_state import settle_initial_conditions
from envs.mesh_lod import check_mesh_faces
from envs.perturb import Perturbation, PerturbedTask, perturb_task
from envs.suites import WAIT_ACTION, TaskInfo, get_task, init_states
from envs.view_cull import ViewCuller

__all__ = [
    "IMAGE_KEYS",
    "ActionError",
    "LazyObservation",
    "LiberoEnv",
    "StaleObservationError",
    "upright",
]

ACTION_DIM = 7
STATE_DIM = 8
# The Panda's arm joints (the gripper's are separate).
ARM_JOINTS = 7
AGENTVIEW = "agentview"
WRIST = "robot0_eye_in_hand"
# Observation key -> robosuite camera.
_CAMERAS = {"image": AGENTVIEW, "wrist_image": WRIST}
IMAGE_KEYS = tuple(_CAMERAS)
# ASCII printable characters: what a BDDL instruction can contain.
_PROMPT_CHARSET = frozenset(chr(c) for c in range(32, 127))
# Control steps a repaired randomized reset settles for before LIBERO checks its :init.
_REPAIR_SETTLE_STEPS = 5
# The keys a reset's options may hold.
_RESET_OPTIONS = ("init_state_id", "randomize", "joint_noise", "lazy_images")


class ActionError(ValueError):
    """An action that is not a finite vector of shape (7,)."""


class StaleObservationError(RuntimeError):
    """An image of a lazy observation read after its env moved on."""


class LazyObservation(Mapping[str, Any]):
    """An observation whose camera images are rendered when first read, then kept.

    It is valid until its env steps or resets again: an image first read after that would
    show a later state, so reading it raises ``StaleObservationError`` instead.
    """

    def __init__(
        self, values: dict[str, Any], render: Callable[[str], np.ndarray], is_current: Callable[[], bool]
    ) -> None:
        self._values = values
        self._render = render
        self._is_current = is_current

    def __getitem__(self, key: str) -> Any:
        if key in self._values:
            return self._values[key]
        if key not in IMAGE_KEYS:
            raise KeyError(key)
        if not self._is_current():
            raise StaleObservationError(f"obs[{key!r}]: read after the env stepped past this observation")
        image = self._values[key] = self._render(key)
        return image

    def __iter__(self) -> Iterator[str]:
        yield from IMAGE_KEYS
        yield from (key for key in self._values if key not in IMAGE_KEYS)

    def __len__(self) -> int:
        return len(IMAGE_KEYS) + sum(key not in IMAGE_KEYS for key in self._values)


def _joint_noise(value: Any, randomize: bool) -> float:
    """The ``joint_noise`` reset option, checked: a finite std >= 0, only with ``randomize``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
        raise ValueError(f"joint_noise: expected a finite std >= 0 in radians, got {value!r}")
    if value and not randomize:
        raise ValueError(
            "joint_noise: applies to randomized resets only (a fixed init state has its own arm pose); "
            "expected it with {'randomize': True}"
        )
    return float(value)


def upright(image: np.ndarray) -> np.ndarray:
    """Rotate a robosuite render by 180 degrees (robosuite 1.4 renders upside down)."""
    return np.ascontiguousarray(image[::-1, ::-1])


def _axis_angle(quat_xyzw: np.ndarray) -> np.ndarray:
    """Axis-angle (3,) of an (x, y, z, w) quaternion, as LIBERO's harnesses compute it."""
    w = float(np.clip(quat_xyzw[3], -1.0, 1.0))
    den = np.sqrt(1.0 - w * w)
    if np.isclose(den, 0.0):
        return np.zeros(3)
    return quat_xyzw[:3] * 2.0 * np.arccos(w) / den


class LiberoEnv(gym.Env):
    """One LIBERO task as a gymnasium env (``hard_reset=False``, headless, never prompts).

    Args:
        suite: one of ``envs.suites.SUITES``.
        task_id: task index within the suite.
        image_size: side of both (square) camera images, in pixels.
        fast_render: render without reflections/MSAA/skybox (~2.3x faster on CPU).
        mesh_faces: cap every visual-only mesh at this many faces (``envs.mesh_lod``;
            about 2x faster again on CPU); 0 renders the meshes as modelled.
        privileged: add ``obs["privileged"] = envs.privileged.privileged_state(raw_env)``
            for the scripted oracle.
        render_mode: ``"rgb_array"`` or None.
        perturbation: a LIBERO-PRO perturbation of the task (``envs.perturb``); one that
            changes the scene only takes randomized resets.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        suite: str,
        task_id: int,
        *,
        image_size: int = 256,
        fast_render: bool = False,
        privileged: bool = False,
        render_mode: str | None = None,
        perturbation: Perturbation | None = None,
        mesh_faces: int = 0,
    ) -> None:
        if not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f"image_size: expected an int >= 8, got {image_size!r}")
        check_mesh_faces(mesh_faces)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode: expected None or 'rgb_array', got {render_mode!r}")
        self.task: TaskInfo = get_task(suite, task_id)
        self.perturbed: PerturbedTask | None = None
        if perturbation is not None:
            self.perturbed = perturb_task(self.task, perturbation)
            variant = self.perturbed
            self.task = replace(self.task, language=variant.language, bddl_file=variant.bddl_file)
        self.image_size = image_size
        self.fast_render = fast_render
        self.privileged = privileged
        self.render_mode = render_mode
        self._init_states = init_states(suite, task_id)
        self._raw_obs: dict[str, Any] | None = None
        self._seeded = False
        # Counts resets and steps, so a lazy observation knows whether it is still current.
        self._tick = 0
        self.init_state_id: int | None = None

        image = gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(
            {
                "image": image,
                "wrist_image": image,
                "state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
                "prompt": gym.spaces.Text(max_length=512, charset=_PROMPT_CHARSET),
            }
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)

        # robosuite 1.4 picks EGL itself unless told otherwise; say it explicitly so
        # that a stray DISPLAY never selects GLX on a headless machine.
        os.environ.setdefault("MUJOCO_GL", "egl")
        from libero.libero.envs import OffScreenRenderEnv

        with fast_render_scope(fast_render):
            self.raw_env = OffScreenRenderEnv(
                bddl_file_name=self.task.bddl_file,
                camera_names=[AGENTVIEW, WRIST],
                camera_heights=image_size,
                camera_widths=image_size,
                # A hard reset rebuilds the MjSim and GL context: 4.3 s instead of 0.25 s.
                hard_reset=False,
                # Episode budgets are enforced by the caller, not robosuite's 1000-step horizon.
                ignore_done=True,
            )
        if mesh_faces:
            self._simplify_meshes(mesh_faces)
        robosuite_env = self.raw_env.env
        # robosuite would render every camera at every step; _observation renders on demand.
        for camera in _CAMERAS.values():
            robosuite_env.modify_observable(f"{camera}_image", "enabled", False)
        from robosuite.utils import macros
        from robosuite.utils.mjcf_utils import IMAGE_CONVENTION_MAPPING

        self._row_order = IMAGE_CONVENTION_MAPPING[macros.IMAGE_CONVENTION]

    @property
    def prompt(self) -> str:
        """The instruction given to the policy."""
        return self.task.language

    @property
    def num_init_states(self) -> int:
        """How many fixed init states the benchmark has for this task."""
        return len(self._init_states)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Start an episode.

        Args:
            seed: seeds LIBERO's global NumPy RNG (object placement). The first reset
                seeds with 0 if no seed was ever given.
            options: ``{"init_state_id": k}`` restores fixed init state k (default 0);
                ``{"randomize": True}`` samples placements from the BDDL regions instead,
                and with it ``{"joint_noise": s}`` adds Gaussian noise of std ``s`` radians
                to each arm joint of the start pose (LIBERO's scene class defaults to
                robosuite's 0.02, and the fixed init states' hand starts spread by about
                1 cm as that gives; a randomized reset's starts at one point);
                ``{"lazy_images": True}`` returns a ``LazyObservation`` (see ``step``).

        The episode depends only on the seed and options, not on what this env ran before.
        """
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - set(_RESET_OPTIONS)
        if unknown:
            raise ValueError(f"options: expected keys {'/'.join(_RESET_OPTIONS)}, got {sorted(unknown)}")
        randomize = bool(options.get("randomize", False))
        joint_noise = _joint_noise(options.get("joint_noise", 0.0), randomize)
        if seed is not None or not self._seeded:
            self.raw_env.seed(0 if seed is None else int(seed))
            self._seeded = True
        self._tick += 1
        self._forget_last_episode()
        raw_obs = self.raw_env.reset()
        if randomize:
            self.init_state_id = None
            raw_obs = settle_initial_conditions(self.raw_env, self._settle, self.np_random, raw_obs=raw_obs)
            if joint_noise:
                # Drawn after the placements, so a seed's scene is the same with or without it.
                raw_obs = self._perturb_arm(self.np_random.normal(0.0, joint_noise, ARM_JOINTS))
        elif self.perturbed is not None and self.perturbed.perturbation.changes_scene:
            raise ValueError(
                f"options: the {self.perturbed.perturbation.kind} perturbation changes the scene, so the "
                "benchmark's fixed init states do not fit it; expected {'randomize': True}"
            )
        else:
            init_state_id = int(options.get("init_state_id", 0))
            if not 0 <= init_state_id < self.num_init_states:
                raise ValueError(
                    f"init_state_id: expected 0 <= id < {self.num_init_states} for {self.task.name}, "
                    f"got {init_state_id}"
                )
            self.init_state_id = init_state_id
            raw_obs = self.raw_env.set_init_state(self._init_states[init_state_id])
        self._raw_obs = raw_obs
        return self._observation(raw_obs, bool(options.get("lazy_images", False))), self._info(success=False)

    def step(self, action: Any, *, lazy_images: bool = False) -> tuple[Mapping, float, bool, bool, dict]:
        """Apply one 7-D action (clipped to [-1, 1]); ``terminated`` means the task succeeded.

        Args:
            action: (7,) arm deltas and gripper.
            lazy_images: return a ``LazyObservation``, which renders a camera only when
                its image is read, instead of a dict with every image rendered.
        """
        if self._raw_obs is None:
            raise RuntimeError("step() called before reset()")
        action = self._check_action(action)
        self._tick += 1
        raw_obs, reward, done, _ = self.raw_env.step(np.clip(action, -1.0, 1.0))
        self._raw_obs = raw_obs
        success = bool(done)
        return (
            self._observation(raw_obs, lazy_images),
            float(reward),
            success,
            False,
            self._info(success=success),
        )

    def render(self) -> np.ndarray | None:
        """The current upright agentview frame (``render_mode="rgb_array"``)."""
        if self.render_mode is None or self._raw_obs is None:
            return None
        return upright(self._render_camera(AGENTVIEW))

    def raw_fields(self) -> dict[str, np.ndarray]:
        """The current step's fields for LIBERO's HDF5 demo schema (copies)."""
        if self._raw_obs is None:
            raise RuntimeError("raw_fields() called before reset()")
        obs = self._raw_obs
        quat = np.asarray(obs["robot0_eef_quat"], dtype=np.float64)
        return {
            "ee_pos": np.array(obs["robot0_eef_pos"], dtype=np.float64),
            "ee_quat": quat.copy(),
            "ee_ori": _axis_angle(quat),
            "gripper_states": np.array(obs["robot0_gripper_qpos"], dtype=np.float64),
            "joint_states": np.array(obs["robot0_joint_pos"], dtype=np.float64),
            "sim_state": np.asarray(self.raw_env.get_sim_state(), dtype=np.float64).copy(),
        }

    def check_success(self) -> bool:
        """Whether the BDDL goal currently holds."""
        return bool(self.raw_env.check_success())

    def object_positions(self) -> dict[str, np.ndarray]:
        """Where each movable object is now, ``(3,)`` world metres (``envs.privileged.object_positions``)."""
        from envs.privileged import object_positions

        return object_positions(self.raw_env)

    def privileged_state(self) -> dict[str, Any]:
        """The simulator's ground truth now (``envs.privileged.privileged_state``)."""
        from envs.privileged import privileged_state

        return privileged_state(self.raw_env)

    def close(self) -> None:
        """Free the simulator and its GL context (avoids EGL tracebacks at exit)."""
        raw_env = getattr(self, "raw_env", None)
        if raw_env is not None:
            context = raw_env.sim._render_context_offscreen if raw_env.sim is not None else None
            if context is not None:
                # robosuite frees the render context's GL objects by id in the current GL
                # context; in another env's, it would delete that env's meshes and textures.
                context.gl_ctx.make_current()
            raw_env.close()
            self.raw_env = None

    def _check_action(self, action: Any) -> np.ndarray:
        try:
            array = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ActionError(
                f"action: expected a numeric array of shape (7,), got {type(action).__name__}"
            ) from exc
        if array.shape != (ACTION_DIM,):
            raise ActionError(f"action: expected shape (7,), got {array.shape}")
        if not np.isfinite(array).all():
            raise ActionError(f"action: expected finite values, got {np.array2string(array, precision=3)}")
        return array

    def _forget_last_episode(self) -> None:
        """Zero what a soft reset would carry over from the previous episode.

        MuJoCo's data reset clears the solver warm-start, controls and applied forces, but
        the gripper integrates its commands in ``current_action``, which robosuite never
        resets: the next episode's first steps would close the gripper as the last ended.
        """
        robosuite_env = self.raw_env.env
        data = robosuite_env.sim.data
        for name in ("qacc_warmstart", "ctrl", "qfrc_applied", "xfrc_applied", "act"):
            getattr(data, name)[:] = 0.0
        for robot in robosuite_env.robots:
            if robot.has_gripper:
                robot.gripper.current_action = np.zeros(robot.gripper.dof)

    def _simplify_meshes(self, max_faces: int) -> None:
        from envs.mesh_lod import simplify_visual_meshes

        sim = self.raw_env.sim
        context = sim._render_context_offscreen
        if context is not None:
            context.gl_ctx.make_current()
        simplify_visual_meshes(sim.model._model, max_faces, None if context is None else context.con)

    def _render_camera(self, camera: str) -> np.ndarray:
        """One camera as robosuite's camera observable renders it (upside down); with fast
        rendering, geoms outside the camera's view are skipped (``envs.view_cull``)."""
        side = self.image_size
        sim = self.raw_env.sim
        culler = None
        if self.fast_render:
            culler = ViewCuller.for_model(sim.model._model, sim._render_context_offscreen.vopt.geomgroup)
        scope = (
            nullcontext()
            if culler is None
            else culler.culled(sim.data._data, sim.model.camera_name2id(camera))
        )
        # robosuite renders with whichever GL context is current, which is the newest env's
        # when a process holds several (a worker caches one per task).
        sim._render_context_offscreen.gl_ctx.make_current()
        with scope:
            image = sim.render(camera_name=camera, width=side, height=side)
        return image[:: self._row_order]

    def _image(self, key: str) -> np.ndarray:
        return upright(self._render_camera(_CAMERAS[key]))

    def _perturb_arm(self, offsets: np.ndarray) -> dict[str, Any]:
        """Move the arm's joints to the robot's start pose plus ``offsets``; the new raw obs."""
        domain_env = self.raw_env.env
        robot = domain_env.robots[0]
        domain_env.sim.data.qpos[robot._ref_joint_pos_indexes] = np.asarray(robot.init_qpos) + offsets
        domain_env.sim.forward()
        # The operational-space controller holds the pose it last saw; make it the new one.
        robot.controller.update(force=True)
        robot.controller.reset_goal()
        return domain_env._get_observations(force_update=True)

    def _settle(self) -> dict[str, Any]:
        """A few control steps at rest; the last raw observation."""
        for _ in range(_REPAIR_SETTLE_STEPS):
            raw_obs, _, _, _ = self.raw_env.step(WAIT_ACTION)
        return raw_obs

    def _observation(self, raw_obs: dict[str, Any], lazy_images: bool) -> Mapping[str, Any]:
        quat = np.asarray(raw_obs["robot0_eef_quat"], dtype=np.float64)
        state = np.concatenate([raw_obs["robot0_eef_pos"], _axis_angle(quat), raw_obs["robot0_gripper_qpos"]])
        obs: dict[str, Any] = {} if lazy_images else {key: self._image(key) for key in IMAGE_KEYS}
        obs.update({"state": state.astype(np.float32), "prompt": self.prompt})
        if self.privileged:
            obs["privileged"] = self.privileged_state()
        if not lazy_images:
            return obs
        tick = self._tick
        return LazyObservation(obs, self._image, lambda: self._tick == tick)

    def _info(self, *, success: bool) -> dict[str, Any]:
        return {
            "is_success": success,
            "task": self.task.name,
            "task_id": self.task.task_id,
            "suite": self.task.suite,
            "init_state_id": self.init_state_id,
        }
