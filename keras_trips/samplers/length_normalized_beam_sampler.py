import keras
import keras_hub
from keras import ops, tree


@keras.saving.register_keras_serializable(package="keras_trips")
class LengthNormalizedBeamSampler(keras_hub.samplers.BeamSampler):
    """Beam search that ends beams at the stop token and ranks the finished
    sequences by their length-normalised log-likelihood.

    keras-hub's `BeamSampler` goes on extending a beam after its stop token
    and ranks the beams by their total log-likelihood, which favours short
    sequences. Here a beam that has produced a stop token is finished: it
    keeps its score and is extended only by that stop token, at no cost.
    The beams left at the end are ranked by `log P / length **
    length_penalty`, `length` counting the generated tokens up to and with
    the stop token (Wu et al., 2016, use `((5 + length) / 6) ** alpha`;
    Hugging Face's `length_penalty` is this one). With `length_penalty=0`
    the ranking is by total log-likelihood.

    Args:
        num_beams: int. The beams kept at each step.
        length_penalty: float. The exponent of the length that divides a
            beam's log-likelihood when the beams are ranked.
        return_all_beams: bool. Also return every beam, best first, with
            its length-normalised score.

    Example:
    ```python
    sampler = LengthNormalizedBeamSampler(num_beams=4, length_penalty=1.0)
    captioner.generate(images, sampler=sampler)
    ```
    """

    def __init__(self, num_beams=4, length_penalty=1.0, **kwargs):
        super().__init__(num_beams=num_beams, **kwargs)
        self.length_penalty = length_penalty

    def __call__(
        self,
        next,
        prompt,
        cache=None,
        index=0,
        mask=None,
        stop_token_ids=None,
        hidden_states=None,
        model=None,
    ):
        num_beams = self.num_beams
        batch_size = ops.shape(prompt)[0]
        index = ops.cast(index, "int32")

        def create_beams(x):
            return ops.repeat(x, num_beams, axis=0)

        def flatten_beams(x):
            return ops.reshape(x, (-1, *ops.shape(x)[2:]))

        def unflatten_beams(x):
            return ops.reshape(x, (-1, num_beams, *ops.shape(x)[1:]))

        mask = (
            ops.zeros_like(prompt, dtype="bool")
            if mask is None
            else ops.cast(mask, "bool")
        )
        stop_token_ids = () if stop_token_ids is None else tuple(stop_token_ids)
        cache = () if cache is None else tree.map_structure(create_beams, cache)
        prompt, mask = create_beams(prompt), create_beams(mask)
        # Only the first beam is live at the start: the others are copies.
        log_probs = flatten_beams(
            ops.broadcast_to(
                ops.array([[0.0] + [-1e9] * (num_beams - 1)], "float32"),
                (batch_size, num_beams),
            )
        )
        finished = ops.zeros((batch_size * num_beams,), "bool")
        lengths = ops.zeros((batch_size * num_beams,), "float32")

        def cond(prompt, cache, index, log_probs, finished, lengths):
            return ops.logical_not(ops.all(finished))

        def body(prompt, cache, index, log_probs, finished, lengths):
            logits, _, cache = next(prompt, cache, index)
            vocabulary_size = ops.shape(logits)[-1]
            step_log_probs = ops.log_softmax(
                ops.cast(logits, "float32") / self.temperature, axis=-1
            )
            if stop_token_ids:
                # A finished beam is extended only by its stop token, free.
                stays_stopped = ops.where(
                    ops.arange(vocabulary_size) == stop_token_ids[0], 0.0, -1e9
                )
                step_log_probs = ops.where(
                    finished[:, None], stays_stopped[None], step_log_probs
                )
            candidates = ops.reshape(
                step_log_probs + log_probs[:, None],
                (-1, num_beams * vocabulary_size),
            )
            top_log_probs, top_indices = ops.top_k(candidates, k=num_beams)
            beam_indices = top_indices // vocabulary_size

            def gather_beams(x):
                x = unflatten_beams(x)
                indices = beam_indices
                for axis in range(2, len(x.shape)):
                    indices = ops.expand_dims(indices, axis=axis)
                return flatten_beams(ops.take_along_axis(x, indices, axis=1))

            prompt = gather_beams(prompt)
            cache = tree.map_structure(gather_beams, cache)
            finished = gather_beams(finished)
            lengths = gather_beams(lengths) + ops.cast(
                ops.logical_not(finished), "float32"
            )
            next_token = ops.cast(
                flatten_beams(top_indices % vocabulary_size), prompt.dtype
            )
            next_token = ops.where(mask[:, index], prompt[:, index], next_token)
            prompt = ops.slice_update(prompt, [0, index], next_token[:, None])
            for stop_token_id in stop_token_ids:
                finished = ops.logical_or(finished, next_token == stop_token_id)
            return (
                prompt,
                cache,
                index + 1,
                flatten_beams(top_log_probs),
                finished,
                lengths,
            )

        prompt, _, _, log_probs, _, lengths = self.run_loop(
            cond=cond,
            body=body,
            loop_vars=(prompt, cache, index, log_probs, finished, lengths),
            maximum_iterations=(ops.shape(prompt)[1] - index),
            model=model,
        )
        scores = unflatten_beams(
            log_probs / ops.maximum(lengths, 1.0) ** self.length_penalty
        )
        order = ops.argsort(-scores, axis=-1)
        prompts = ops.take_along_axis(unflatten_beams(prompt), order[..., None], axis=1)
        if self.return_all_beams:
            return prompts, ops.take_along_axis(scores, order, axis=1)
        return prompts[:, 0]

    def get_config(self):
        config = super().get_config()
        config["length_penalty"] = self.length_penalty
        return config
