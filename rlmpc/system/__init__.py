"""The system: rollout workers, two replay shards, a learner, and the loop that drives them."""
