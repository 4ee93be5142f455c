"""Operations on the fleet's inputs and queues: the sweep of files whose notification
never came (:mod:`.sweep`) and the dead-letter queue (:mod:`.dlq`)."""
