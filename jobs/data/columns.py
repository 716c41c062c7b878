"""Column names of the tables stages exchange, in one place (ARCHITECTURE.md data flow)."""

USER_ID = "user_id"
ITEM_ID = "item_id"
USER_IDX = "user_idx"
ITEM_IDX = "item_idx"
STRENGTH = "strength"
RATING = "rating"
TIMESTAMP = "timestamp"
N_EVENTS = "n_events"
SPLIT = "split"
FACTORS = "factors"
VECTOR = "vector"
SOURCE = "source"
RANK = "rank"
SCORE = "score"
EMBEDDING = "embedding"  # item_embeddings: the text encoder's vector
SEEN = "seen"

TRAIN = "train"
TEST = "test"
FOLD_IN = "fold_in"  # history of held-out users: given at scoring time, not trained on
