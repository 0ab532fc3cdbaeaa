-- wrk script of benches/scale.sh: GETs /jwt/v1/accounts/<key> for the keys in the file named
-- by $KEYS (one per line). ORDER=seq (default) asks each key once, in file order, and stops
-- asking when the list is used up (wrk still waits for its -d; first-touch runs size -d so the
-- list lasts, and report the requests made); ORDER=cycle starts over at the end (nginx, which
-- caches nothing); ORDER=random picks a key at random for every request (seeded by $SEED).
local paths, n, i = {}, 0, 0
local random = os.getenv("ORDER") == "random"
local cycle = os.getenv("ORDER") == "cycle"

function init(args)
  for line in io.lines(os.getenv("KEYS")) do
    n = n + 1
    paths[n] = "/jwt/v1/accounts/" .. line
  end
  math.randomseed(tonumber(os.getenv("SEED") or "1"))
end

function request()
  if random then
    return wrk.format(nil, paths[math.random(n)])
  end
  i = i + 1
  if cycle then
    if i > n then
      i = 1
    end
  elseif i >= n then
    wrk.thread:stop()
    i = n
  end
  return wrk.format(nil, paths[i])
end
