"""Token accounting: usage from responses, estimates, prices, budgets."""
