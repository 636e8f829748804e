"""Operations (reap, send, doctor, simulate, summaries): library functions returning results."""
