"""What every model family shares: the replay buffer, model files, learning curves."""
