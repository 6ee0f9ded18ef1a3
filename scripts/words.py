"""Generated text for the benchmark and test scripts: a fixed vocabulary and sentences drawn from
it with the caller's random generator, so that a seed always gives the same texts."""

WORDS = (
    "river mountain harbour lantern engine garden winter market signal bridge library orchard "
    "copper forest desert island village castle canal meadow glacier volcano comet planet "
    "telescope compass anchor sail ship storm thunder rain snow summer autumn spring harvest "
    "bread cheese honey apple pepper salt coffee tea kettle oven stone brick timber glass paper "
    "ink pencil letter poem story song drum violin piano choir dance painter sculptor weaver "
    "potter baker farmer sailor miner doctor nurse teacher student judge soldier merchant "
    "clock wheel gear spring lever pulley rope chain hammer chisel saw needle thread cloth "
    "wool silk cotton leather dye colour red blue green amber silver golden dark bright quiet "
    "loud slow fast ancient modern small large narrow wide deep shallow warm cold wet dry "
    "builds carries watches guides repairs grows bakes paints writes reads sings measures "
    "crosses climbs follows finds keeps opens closes lights turns holds gathers sorts weighs"
).split()


def words(rng, n):
    """`n` words drawn from WORDS."""
    return " ".join(rng.choice(WORDS) for _ in range(n))


def sentence(rng, n):
    """A sentence of `n` words: capitalised, ending with a full stop."""
    return words(rng, n).capitalize() + "."
