"""The LIBERO gymnasium env: schema, bounds, orientation, resets, fast-render scoping.

Budget: ~15-20 s (one 64 px fast-render env shared by the module). pytest replaces stdin
with a reader that raises, so creating the env here also shows it never prompts.
"""

from __future__ import annotations

import numpy as np
import pytest

from envs.fast_render import fast_render
from envs.suites import MAX_STEPS, SUITES, UnknownSuiteError, get_task, init_states

SUITE = "libero_spatial"
SIZE = 64


@pytest.fixture(scope="module")
def env():
    from envs.libero_env import LiberoEnv

    env = LiberoEnv(SUITE, 0, image_size=SIZE, fast_render=True)
    yield env
    env.close()


def test_suites_table_and_lookup_errors():
    assert set(MAX_STEPS) == set(SUITES)
    assert MAX_STEPS["libero_spatial"] == 220 and MAX_STEPS["libero_10"] == 520
    with pytest.raises(UnknownSuiteError, match=r"suite: expected one of .* got 'libero_nope'"):
        get_task("libero_nope", 0)
    with pytest.raises(
        UnknownSuiteError, match=r"task_id: expected 0 <= task_id < 10 for libero_spatial, got 10"
    ):
        get_task(SUITE, 10)


def test_fast_render_patch_is_scoped_and_idempotent():
    from robosuite.utils.binding_utils import MjRenderContext

    original = MjRenderContext.__init__
    with fast_render():
        patched = MjRenderContext.__init__
        assert patched is not original
        with fast_render():
            assert MjRenderContext.__init__ is patched, "nesting does not wrap twice"
        assert MjRenderContext.__init__ is patched, "the inner exit keeps the outer patch"
        with fast_render(False):
            assert MjRenderContext.__init__ is patched
    assert MjRenderContext.__init__ is original


@pytest.mark.libero
def test_observation_schema(env):
    obs, info = env.reset(seed=7, options={"init_state_id": 0})
    assert set(obs) == {"image", "wrist_image", "state", "prompt"}
    for key in ("image", "wrist_image"):
        assert obs[key].shape == (SIZE, SIZE, 3) and obs[key].dtype == np.uint8
    assert obs["state"].shape == (8,) and obs["state"].dtype == np.float32
    assert obs["prompt"] == get_task(SUITE, 0).language
    raw = env.raw_fields()
    np.testing.assert_allclose(
        obs["state"],
        np.concatenate([raw["ee_pos"], raw["ee_ori"], raw["gripper_states"]]),
        rtol=1e-6,
        atol=1e-6,
    )
    assert raw["joint_states"].shape == (7,) and raw["sim_state"].shape == init_states(SUITE, 0).shape[1:]
    assert env.observation_space.contains(obs)
    assert info["init_state_id"] == 0 and info["is_success"] is False


@pytest.mark.libero
def test_images_are_upright_and_rendered_as_robosuite_renders_them(env):
    obs, _ = env.reset(seed=7, options={"init_state_id": 1})
    robosuite_env = env.raw_env.env
    names = ("agentview_image", "robot0_eye_in_hand_image")
    for name in names:
        robosuite_env.modify_observable(name, "enabled", True)
    try:
        rendered = robosuite_env._get_observations(force_update=True)
    finally:
        for name in names:
            robosuite_env.modify_observable(name, "enabled", False)
    np.testing.assert_array_equal(obs["image"], rendered["agentview_image"][::-1, ::-1])
    np.testing.assert_array_equal(obs["wrist_image"], rendered["robot0_eye_in_hand_image"][::-1, ::-1])
    # Agentview looks at the robot across the table: the bright wooden table fills the
    # lower half, the robot and dark backdrop the upper half.
    image = obs["image"].astype(float)
    assert image[SIZE // 2 :].mean() > image[: SIZE // 2].mean() + 10


def test_renders_that_skip_out_of_view_geoms_match_full_renders_as_the_arm_moves(env):
    from envs.view_cull import ViewCuller

    env.reset(seed=3, options={"init_state_id": 0})
    sim = env.raw_env.sim
    culler = ViewCuller.for_model(sim.model._model, sim._render_context_offscreen.vopt.geomgroup)
    assert culler is not None, "LIBERO's lights cast no shadows and fast rendering hides a geom group"
    hidden = {}
    for _ in range(3):
        for _ in range(4):
            env.step(np.array([0.6, -0.4, -0.5, 0.0, 0.0, 0.4, -1.0]))
        for camera in ("agentview", "robot0_eye_in_hand"):
            with culler.culled(sim.data._data, sim.model.camera_name2id(camera)) as count:
                hidden[camera] = count
            full = sim.render(camera_name=camera, width=SIZE, height=SIZE)[:: env._row_order]
            np.testing.assert_array_equal(env._render_camera(camera), full)
    assert hidden["robot0_eye_in_hand"] > 10, "the wrist camera sees a small part of the scene"


@pytest.mark.libero
def test_an_env_renders_its_own_scene_after_another_env_was_made(env):
    from envs.libero_env import LiberoEnv

    env.reset(seed=3, options={"init_state_id": 0})
    before = env._render_camera("agentview")
    other = LiberoEnv(SUITE, 9, image_size=SIZE, fast_render=True)
    try:
        other.reset(seed=3, options={"init_state_id": 0})
        assert np.abs(other._render_camera("agentview").astype(int) - before).mean() > 1
        np.testing.assert_array_equal(env._render_camera("agentview"), before)
    finally:
        other.close()
    np.testing.assert_array_equal(env._render_camera("agentview"), before)


@pytest.mark.libero
def test_capped_meshes_change_only_the_images_and_only_a_little(env):
    from envs.libero_env import LiberoEnv

    capped = LiberoEnv(SUITE, 0, image_size=SIZE, fast_render=True, mesh_faces=10_000)
    try:
        model, full_model = capped.raw_env.sim.model._model, env.raw_env.sim.model._model
        assert full_model.mesh_facenum.max() > 40_000, "the bowls' scans"
        assert model.mesh_facenum.sum() < 0.6 * full_model.mesh_facenum.sum()
        observations = [e.reset(seed=3, options={"init_state_id": 0})[0] for e in (env, capped)]
        for _ in range(6):
            observations = [
                e.step(np.array([0.6, -0.4, -0.5, 0.0, 0.0, 0.4, -1.0]))[0] for e in (env, capped)
            ]
        full, coarse = observations
        np.testing.assert_array_equal(full["state"], coarse["state"])
        np.testing.assert_array_equal(
            env.raw_env.sim.get_state().flatten(), capped.raw_env.sim.get_state().flatten()
        )
        for key in ("image", "wrist_image"):
            difference = np.abs(full[key].astype(int) - coarse[key].astype(int))
            assert 0 < difference.mean() < 4, key
    finally:
        capped.close()


@pytest.mark.libero
def test_action_bounds_and_bad_actions(env):
    from envs.libero_env import ActionError

    assert env.action_space.shape == (7,)
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    env.reset(seed=7, options={"init_state_id": 0})
    with pytest.raises(ActionError, match=r"action: expected shape \(7,\), got \(6,\)"):
        env.step(np.zeros(6))
    with pytest.raises(ActionError, match=r"action: expected finite values, got \[ 0\. nan"):
        env.step(np.array([0, np.nan, 0, 0, 0, 0, -1]))
    _, reward, terminated, truncated, info = env.step(np.full(7, 5.0))  # clipped, not rejected
    assert not truncated and terminated == info["is_success"] and isinstance(reward, float)


@pytest.mark.libero
def test_resets_restore_init_states_and_seeded_placements(env):
    env.reset(seed=7, options={"init_state_id": 3})
    np.testing.assert_allclose(env.raw_fields()["sim_state"][1:], init_states(SUITE, 0)[3][1:])

    def placement(seed):
        env.reset(seed=seed, options={"randomize": True})
        return env.raw_fields()["sim_state"].copy()

    first, again, other = placement(11), placement(11), placement(12)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
    assert env.init_state_id is None
    with pytest.raises(ValueError, match="init_state_id: expected 0 <= id < 50"):
        env.reset(options={"init_state_id": 50})


@pytest.mark.libero
def test_start_joint_noise_moves_only_the_arm_and_the_controller_holds_it(env):
    from envs.libero_env import ARM_JOINTS

    def start(seed, **noise):
        obs, _ = env.reset(seed=seed, options={"randomize": True, **noise})
        return obs["state"].copy(), env.raw_fields()

    plain_state, plain = start(11)
    noisy_state, noisy = start(11, joint_noise=0.02)
    again_state, _ = start(11, joint_noise=0.02)
    np.testing.assert_array_equal(noisy_state, again_state)
    robot = env.raw_env.env.robots[0]
    np.testing.assert_allclose(plain["joint_states"], robot.init_qpos, atol=1e-6)
    offsets = noisy["joint_states"] - plain["joint_states"]
    assert offsets.shape == (ARM_JOINTS,) and 0.002 < np.abs(offsets).max() < 0.1
    shift = np.linalg.norm(noisy_state[:3] - plain_state[:3])
    assert 0.001 < shift < 0.05, f"the hand moved {shift:.4f} m"
    # The objects are where the same seed puts them without the noise: it is drawn after them.
    qpos = env.raw_env.env.sim.data.qpos
    arm = set(robot._ref_joint_pos_indexes) | set(robot._ref_gripper_joint_pos_indexes)
    objects = [i + 1 for i in range(len(qpos)) if i not in arm]  # sim_state[0] is the time
    np.testing.assert_allclose(noisy["sim_state"][objects], plain["sim_state"][objects], atol=1e-9)
    # Resting steps keep the perturbed pose: the controller's goal moved with the arm.
    for _ in range(5):
        obs, *_ = env.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))
    assert np.linalg.norm(obs["state"][:3] - noisy_state[:3]) < 0.002

    with pytest.raises(ValueError, match="joint_noise: applies to randomized resets only"):
        env.reset(options={"init_state_id": 0, "joint_noise": 0.02})
    for bad in (-0.01, float("nan"), "0.02", True):
        with pytest.raises(ValueError, match="joint_noise: expected a finite std >= 0 in radians"):
            env.reset(options={"randomize": True, "joint_noise": bad})


@pytest.mark.libero
def test_lazy_observations_render_on_read_and_refuse_stale_reads(env):
    from envs.libero_env import StaleObservationError

    action = np.array([0.3, 0, 0, 0, 0, 0, -1])
    env.reset(seed=7, options={"init_state_id": 0})
    eager, *_ = env.step(action)
    first, _ = env.reset(seed=7, options={"init_state_id": 0, "lazy_images": True})
    lazy, *_ = env.step(action, lazy_images=True)
    assert list(lazy) == list(eager) and len(lazy) == len(eager)
    np.testing.assert_array_equal(lazy["state"], eager["state"])
    np.testing.assert_array_equal(lazy["wrist_image"], eager["wrist_image"])
    with pytest.raises(StaleObservationError, match=r"obs\['image'\]: read after the env stepped"):
        first["image"]
    kept = dict(lazy)
    env.step(action, lazy_images=True)
    np.testing.assert_array_equal(lazy["image"], kept["image"])
    np.testing.assert_array_equal(kept["image"], eager["image"])


@pytest.mark.libero
def test_a_reused_env_replays_an_episode_exactly_as_a_fresh_one(env):
    from envs.libero_env import LiberoEnv

    actions = np.random.default_rng(0).uniform(-1, 1, (4, 7))
    actions[:, 6] = 1.0  # closing the gripper is what a soft reset used to carry over

    def episode(runner):
        frames = [runner.reset(seed=3, options={"init_state_id": 2})[0]]
        frames += [runner.step(action)[0] for action in actions]
        return frames

    for action in actions:
        env.reset(seed=5, options={"init_state_id": 4})
        env.step(action)
    reused = episode(env)
    fresh_env = LiberoEnv(SUITE, 0, image_size=SIZE, fast_render=True)
    try:
        fresh = episode(fresh_env)
        from gymnasium.utils.env_checker import check_env

        check_env(fresh_env, skip_render_check=True)
    finally:
        fresh_env.close()
    for got, want in zip(reused, fresh, strict=True):
        for key in ("image", "wrist_image", "state"):
            np.testing.assert_array_equal(got[key], want[key])


@pytest.mark.libero
def test_fast_render_env_has_fast_context_and_privileged_obs(env):
    import mujoco
    from robosuite.utils.binding_utils import MjRenderContext

    context = env.raw_env.env.sim._render_context_offscreen
    assert env.raw_env.env.sim.model.vis.quality.offsamples == 0
    assert context.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] == 0
    assert MjRenderContext.__init__.__name__ == "__init__" and not hasattr(
        MjRenderContext.__init__, "__wrapped__"
    )
    env.privileged = True
    try:
        obs, _ = env.reset(seed=7, options={"init_state_id": 0})
    finally:
        env.privileged = False
    assert obs["privileged"]["goal"] == [["on", "akita_black_bowl_1", "plate_1"]]


@pytest.mark.libero
def test_an_episode_renders_only_the_observations_its_policy_reads(env, monkeypatch):
    from eval.libero.episode import EnvSpec, EpisodeSpec, run_episode

    class Holds:
        def reset(self) -> None:
            """Nothing to forget."""

        def infer(self, obs):
            assert obs["image"].shape == obs["wrist_image"].shape == (SIZE, SIZE, 3)
            return np.tile(np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float32), (8, 1))

    rendered = []
    render = env._render_camera
    monkeypatch.setattr(env, "_render_camera", lambda camera: rendered.append(camera) or render(camera))
    spec = EpisodeSpec(EnvSpec(SUITE, 0, SIZE, True), init_state_id=0, seed=1, max_steps=16, num_wait_steps=3)
    result = run_episode(env, Holds(), spec)
    assert result.num_queries == 2 and result.steps == 16
    # Two cameras per policy query; none for the reset, the 3 settle steps or the other 14 steps.
    assert len(rendered) == 4


@pytest.mark.libero
def test_object_positions_match_the_ground_truth_and_name_a_real_episodes_failure(env):
    from eval.libero.episode import EnvSpec, EpisodeSpec, run_episode
    from eval.libero.failure_modes import FailureRecorder

    class Grips:
        """Closes the gripper from the first step without moving the arm."""

        def __init__(self, gripper: float) -> None:
            self.gripper = gripper

        def reset(self) -> None:
            """Nothing to forget."""

        def infer(self, obs):
            return np.tile(np.array([0, 0, 0, 0, 0, 0, self.gripper], dtype=np.float32), (8, 1))

    env.reset(seed=7, options={"init_state_id": 0})
    positions, truth = env.object_positions(), env.privileged_state()["objects"]
    assert set(positions) == {name for name, obj in truth.items() if not obj["fixture"]}
    for name, pos in positions.items():
        np.testing.assert_array_equal(pos, truth[name]["pos"])
    spec = EpisodeSpec(EnvSpec(SUITE, 0, SIZE, True), init_state_id=0, seed=1, max_steps=8, num_wait_steps=2)
    modes = []
    for gripper in (-1.0, 1.0):
        recorder = FailureRecorder()
        assert not run_episode(env, Grips(gripper), spec, observers=[recorder]).success
        modes.append(recorder.diagnose().mode)
    assert modes == ["never_closed", "missed_grasp"]
