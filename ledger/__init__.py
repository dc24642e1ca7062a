"""Money: each user's cash account and its append-only ledger. Every movement (a deposit, a
withdrawal, realised profit and loss, a liquidation's loss) is one entry, written in the same
transaction as its cause; the balance is the sum of the entries."""
