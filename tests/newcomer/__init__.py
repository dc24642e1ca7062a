# The simulated feed's seed the newcomer test runs scripts/run with (MARKET_FEED_SEED): its walk fires
# alice's demo guard (ETH_USD's, her short) 66 steps in, ~33 s; tests/devtools/test_demo_walk.py
# checks that, in seconds, whenever the instruments, the demo's positions or the guard change.
FEED_SEED = 43
