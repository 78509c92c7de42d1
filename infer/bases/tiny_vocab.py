"""English words the locally made CLIP tokenizer learns its merges from.

Ordinary prompt words become single tokens; any other word still splits into byte-level pieces,
as in the real CLIP vocabulary, so no prompt collapses to a couple of unknown tokens.
"""

WORDS = """
a an the and or but of in on at to from with without by for as is are was were be been being it its
this that these those there here he she they we you i me my our your his her their them us who what
which when where why how all any some each every no not more most less few many much very so too
one two three four five six seven eight nine ten first second third last next new old young big small
large little long short tall high low wide narrow deep bright dark light heavy soft hard rough smooth
warm cold hot cool wet dry early late good bad best better great fine beautiful ugly strange quiet loud
painting paintings painted painter paint oil watercolor watercolour acrylic canvas brush brushstroke
brushstrokes stroke strokes impasto texture textured thick thin layer layers palette colour color
colours colors colourful colorful vivid vibrant muted pale saturated pastel tone tones hue shade shadow
shadows highlight highlights contrast composition perspective drawing sketch study studies etching
print woodblock woodcut ink charcoal pencil fresco mural tempera gouache pigment varnish frame gallery
museum art artist artists artwork work works style styles styled manner school movement period era
impressionism impressionist postimpressionism expressionism expressionist cubism cubist surrealism
realism romanticism baroque renaissance modern contemporary abstract figurative classical academic
dutch french japanese italian spanish flemish german english russian american chinese ukiyo
portrait portraits self landscape landscapes seascape cityscape still life nude figure figures scene
scenes view views interior exterior garden gardens field fields wheat wheatfield harvest orchard olive
olives cypress cypresses tree trees forest wood woods flower flowers sunflower sunflowers iris irises
rose roses lily lilies almond blossom blossoms leaf leaves grass bush branch branches root roots
sky skies cloud clouds sun sunset sunrise moon star stars starry night day evening morning noon dusk
dawn weather rain snow wind storm fog mist light lights lamp lamps candle fire water river rivers sea
ocean wave waves lake pond stream bridge boat boats ship ships harbour harbor port beach coast shore
cliff cliffs mountain mountains hill hills valley rock rocks stone stones road roads path street
streets village town city house houses home church cathedral tower roof roofs wall walls window windows
door doors room bedroom kitchen cafe café terrace table chair chairs bed bottle bottles glass cup vase
bowl fruit fruits apple apples pear pears lemon lemons orange oranges grapes bread plate book books
shoes hat hats dress coat shirt face faces eye eyes hair hand hands head heart body woman women man
men girl boy child children baby mother father family friend people person crowd worker workers farmer
peasant peasants sower reaper weaver miner dancer dancers singer doctor postman soldier king queen
horse horses cow cows sheep dog dogs cat cats bird birds crow crows fish butterfly insect animal animals
red orange yellow green blue violet purple pink brown black white grey gray gold golden silver ochre
umber sienna cobalt ultramarine emerald crimson scarlet turquoise lavender cream beige navy teal
swirl swirls swirling spiral spirals curve curves curved line lines dot dots dotted pattern patterns
circle circles square squares shape shapes form forms edge edges outline outlines flat bold loose tight
energetic calm dramatic gentle expressive emotional lonely joyful sad happy serene melancholy peaceful
photo photograph photography picture image images render rendering digital camera lens blurry blur
sharp detailed detail details lowres resolution quality high masterpiece realistic photorealistic
closeup close up top bottom left right center centre middle background foreground side front back
above below under over between behind inside outside around through across along near far away
walk walking sit sitting stand standing lie lying run running look looking hold holding read reading
eat eating drink drinking work working sleep sleeping play playing grow growing fall falling fly flying
make made show shows shown see seen give given take taken come came go went get got have has had do
does did say said think know like love want need use used find found call called feel felt keep kept
"""
